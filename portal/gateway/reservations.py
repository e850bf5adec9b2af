"""Hard budgets under concurrency (API.md §12, §10): before a call is forwarded, its maximum cost
is reserved against every hard budget over its key, atomically in the shared store; a reservation
that would take any of them past its amount refuses the call (402). When the call is metered the
reservation is settled to the real cost (portal.gateway.metering, in the same Redis transaction
that hands the event over), so the overshoot of a budget is bounded by the estimation error of
the calls in flight, not by how many there are.

Each (budget, period) has one counter, in 1e-8 currency units: what the period has spent through
the gateway plus what is reserved. It starts from the spending the database knows, the first time
a period's counter is needed (SET NX: one starter wins), and lives until the period ends.
Without Redis the counters are this process's (the development server, the tests).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from portal.gateway.catalog import HardBudget

# Check every counter, then add to all of them, in one step (Redis runs a script alone). A missing
# counter is reported as -index so the caller can start it from the database and try again.
_RESERVE = """
for i, key in ipairs(KEYS) do
  local used = redis.call('GET', key)
  if not used then return -i end
  if tonumber(used) + tonumber(ARGV[1]) > tonumber(ARGV[i + 1]) then return i end
end
for i, key in ipairs(KEYS) do redis.call('INCRBY', key, ARGV[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    counters: tuple[str, ...]
    units: int


class BudgetExceeded(Exception):
    def __init__(self, budget: HardBudget) -> None:
        super().__init__(budget.budget_id)
        self.budget = budget


class Reservations:
    """`reserve` before forwarding; the settlement is `settle_commands` inside metering's transaction."""

    def __init__(self, redis, spent_units: Callable[[int], Awaitable[int]]) -> None:
        self.redis = redis
        self.spent_units = spent_units
        self._script = redis.register_script(_RESERVE) if redis is not None else None
        self._memory: dict[str, int] = {}

    async def reserve(self, budgets: tuple[HardBudget, ...], units: int) -> Reservation | None:
        if not budgets:
            return None
        counters = tuple(budget.counter for budget in budgets)
        limits = [budget.amount_units for budget in budgets]
        for _attempt in range(len(budgets) + 1):
            if self._script is not None:
                answer = int(await self._script(keys=list(counters), args=[units, *limits]))
            else:
                answer = self._reserve_in_memory(counters, units, limits)
            if answer == 0:
                return Reservation(counters, units)
            if answer > 0:
                raise BudgetExceeded(budgets[answer - 1])
            await self._start(budgets[-answer - 1])
        raise RuntimeError("a budget counter could not be started")

    def _reserve_in_memory(self, counters: tuple[str, ...], units: int, limits: list[int]) -> int:
        for index, counter in enumerate(counters, start=1):
            if counter not in self._memory:
                return -index
            if self._memory[counter] + units > limits[index - 1]:
                return index
        for counter in counters:
            self._memory[counter] += units
        return 0

    async def _start(self, budget: HardBudget) -> None:
        spent = await self.spent_units(budget.budget_id)
        if self.redis is not None:
            ttl = max(int((budget.expires_at - datetime.now(UTC)).total_seconds()) + 86400, 60)
            await self.redis.set(budget.counter, spent, nx=True, ex=ttl)
        else:
            self._memory.setdefault(budget.counter, spent)

    def settle_in_memory(self, reservation: Reservation, actual_units: int) -> None:
        for counter in reservation.counters:
            self._memory[counter] = self._memory.get(counter, 0) + actual_units - reservation.units

    async def release(self, reservation: Reservation | None) -> None:
        """Give a reservation back whole: the call was refused after reserving (a later check)."""
        if reservation is None:
            return
        if self.redis is None:
            self.settle_in_memory(reservation, 0)
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for counter in reservation.counters:
                pipe.decrby(counter, reservation.units)
            await pipe.execute()

    async def used_units(self, counter: str) -> int | None:
        """The counter's value (tests and the benchmark read it)."""
        if self.redis is None:
            return self._memory.get(counter)
        value = await self.redis.get(counter)
        return int(value) if value is not None else None
