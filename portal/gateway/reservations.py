"""Hard budgets under concurrency (API.md §12, §10): before a call is forwarded, its maximum cost
is reserved against every hard budget over its key, atomically in the shared store (by
portal.gateway.admission, in the same step as the rate-limit windows); a reservation
that would take any of them past its amount refuses the call (402). When the call is metered the
reservation is settled to the real cost (portal.gateway.metering, in the same Redis script
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


@dataclass(frozen=True, slots=True)
class Reservation:
    counters: tuple[str, ...]
    units: int


class BudgetExceeded(Exception):
    def __init__(self, budget: HardBudget) -> None:
        super().__init__(budget.budget_id)
        self.budget = budget


class Reservations:
    """The budget counters: reserved in portal.gateway.admission's one step, settled inside
    metering's hand-over script (portal.gateway.metering)."""

    def __init__(self, redis, spent_units: Callable[[int], Awaitable[int]]) -> None:
        self.redis = redis
        self.spent_units = spent_units
        self._memory: dict[str, int] = {}

    def reserve_in_memory(self, counters: tuple[str, ...], units: int, limits: list[int]) -> int:
        """0: reserved in every counter; i > 0: counter i would cross its amount; -i: counter i is
        not started yet."""
        for index, counter in enumerate(counters, start=1):
            if counter not in self._memory:
                return -index
            if self._memory[counter] + units > limits[index - 1]:
                return index
        for counter in counters:
            self._memory[counter] += units
        return 0

    async def start(self, budget: HardBudget) -> None:
        """Start a period's counter from what the database knows was spent (one starter wins)."""
        spent = await self.spent_units(budget.budget_id)
        if self.redis is not None:
            ttl = max(int((budget.expires_at - datetime.now(UTC)).total_seconds()) + 86400, 60)
            await self.redis.set(budget.counter, spent, nx=True, ex=ttl)
        else:
            self._memory.setdefault(budget.counter, spent)

    def settle_in_memory(self, reservation: Reservation, actual_units: int) -> None:
        for counter in reservation.counters:
            self._memory[counter] = self._memory.get(counter, 0) + actual_units - reservation.units

    async def used_units(self, counter: str) -> int | None:
        """The counter's value (tests and the benchmark read it)."""
        if self.redis is None:
            return self._memory.get(counter)
        value = await self.redis.get(counter)
        return int(value) if value is not None else None
