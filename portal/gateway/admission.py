"""Admitting a call (API.md §12): its rate-limit windows and its budget reservation in ONE step,
one Redis round trip (a script runs alone, so nothing interleaves): every window is tested, then
every hard budget, and only if all have room is the call counted in every window and its worst
cost reserved in every budget counter. A refused call changes nothing. The order of the checks
is the contract's: a call refused by a window is a 429 even if a budget is also full.

The windows are portal.gateway.ratelimits' one-second buckets, the budget counters
portal.gateway.reservations' (settled when the call is metered).

Why not the `limits` library's moving window (the gateway's first version used it): it tests and
counts one window per Redis round trip and cannot reserve budgets in the same atomic step. Six
windows (key, department and plan, requests and tokens) plus the reservation were 12 round trips
a call; under 32 concurrent clients they exhausted the connection pool (MaxConnectionsError, HTTP
500s: bench/RESULTS.md, 2026-12-06), and a call could be counted in some windows and refused by
the next. One script keeps the same model (a moving 60-second window) with none of that.
"""

import time
from dataclasses import dataclass

from portal.gateway.catalog import HardBudget
from portal.gateway.ratelimits import WINDOW_SECONDS, Count, MemoryWindows, Window, costs_of, headers, refusal
from portal.gateway.reservations import BudgetExceeded, Reservation, Reservations

# KEYS: the n windows' hashes, then the budgets' counters.
# ARGV: now (whole seconds), n, then limit and cost of each window, then the units to reserve,
# "1" when a budget is known exhausted already (refuse after the windows), then each budget's amount.
# Answer: {verdict, index, used_1..used_n, oldest_1..oldest_n}; verdict 0 admitted, 1 a window is
# full, 2 budget `index` would be crossed (index 0: known exhausted), -1 budget `index` has no
# counter yet (start it from the database and try again).
_ADMIT = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local since = now - __WINDOW__
local used, oldest = {}, {}
local full = false
for i = 1, n do
  local flat = redis.call('HGETALL', KEYS[i])
  local sum, first = 0, now
  for j = 1, #flat, 2 do
    local second = tonumber(flat[j])
    if second <= since then
      redis.call('HDEL', KEYS[i], flat[j])
    else
      sum = sum + tonumber(flat[j + 1])
      if second < first then first = second end
    end
  end
  used[i], oldest[i] = sum, first
  if sum + tonumber(ARGV[2 + 2 * i]) > tonumber(ARGV[1 + 2 * i]) then full = true end
end
local function answer(verdict, index)
  local out = {verdict, index}
  for i = 1, n do out[#out + 1] = used[i] end
  for i = 1, n do out[#out + 1] = oldest[i] end
  return out
end
if full then return answer(1, 0) end
local units = tonumber(ARGV[3 + 2 * n])
if ARGV[4 + 2 * n] == '1' then return answer(2, 0) end
for k = n + 1, #KEYS do
  local spent = redis.call('GET', KEYS[k])
  if not spent then return answer(-1, k - n) end
  if tonumber(spent) + units > tonumber(ARGV[4 + n + k]) then return answer(2, k - n) end
end
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], now, ARGV[2 + 2 * i])
  redis.call('EXPIRE', KEYS[i], __WINDOW__ + 1)
end
for k = n + 1, #KEYS do redis.call('INCRBY', KEYS[k], units) end
return answer(0, 0)
""".replace("__WINDOW__", str(WINDOW_SECONDS))


class BudgetKnownExhausted(Exception):
    """The key's verification already says a hard budget over it is exhausted."""


@dataclass(frozen=True, slots=True)
class Admitted:
    reservation: Reservation | None
    headers: list[tuple[bytes, bytes]]  # x-ratelimit-* for the answer


class Admission:
    def __init__(self, redis, reservations: Reservations) -> None:
        self.redis = redis
        self.reservations = reservations
        self._script = redis.register_script(_ADMIT) if redis is not None else None
        self.memory = MemoryWindows()

    async def admit(self, windows: list[Window], tokens: int, budgets: tuple[HardBudget, ...], units: int, *,
                    budget_exhausted: bool = False) -> Admitted:
        """Count the call in every window and reserve `units` in every budget, or change nothing
        and raise: GatewayError rate_limit_exceeded (429), BudgetExceeded, BudgetKnownExhausted."""
        costs = costs_of(windows, tokens)
        for _attempt in range(len(budgets) + 1):
            now = time.time()
            second = int(now)
            if self._script is not None:
                keys = [window.counter for window in windows] + [budget.counter for budget in budgets]
                args = [second, len(windows)]
                for window, cost in zip(windows, costs, strict=True):
                    args += [window.limit, cost]
                args += [units, "1" if budget_exhausted else "0", *(budget.amount_units for budget in budgets)]
                reply = [int(value) for value in await self._script(keys=keys, args=args)]
                verdict, index = reply[0], reply[1]
                counts = [Count(used, oldest) for used, oldest in
                          zip(reply[2:2 + len(windows)], reply[2 + len(windows):], strict=True)]
            else:
                verdict, index, counts = self._admit_in_memory(windows, costs, budgets, units, second,
                                                               budget_exhausted)
            if verdict == 0:
                reservation = Reservation(tuple(b.counter for b in budgets), units) if budgets else None
                return Admitted(reservation, headers(windows, counts, costs, now, admitted=True))
            if verdict == 1:
                raise refusal(windows, counts, costs, now)
            if verdict == 2:
                if index == 0:
                    raise BudgetKnownExhausted()
                raise BudgetExceeded(budgets[index - 1])
            await self.reservations.start(budgets[index - 1])
        raise RuntimeError("a budget counter could not be started")

    def _admit_in_memory(self, windows: list[Window], costs: list[int], budgets: tuple[HardBudget, ...],
                         units: int, second: int, budget_exhausted: bool) -> tuple[int, int, list[Count]]:
        counts = [self.memory.count(window, second) for window in windows]
        if any(count.used + cost > window.limit for window, count, cost in zip(windows, counts, costs, strict=True)):
            return 1, 0, counts
        if budget_exhausted:
            return 2, 0, counts
        answer = self.reservations.reserve_in_memory(tuple(b.counter for b in budgets), units,
                                                     [b.amount_units for b in budgets])
        if answer != 0:
            return (2 if answer > 0 else -1), abs(answer), counts
        for window, cost in zip(windows, costs, strict=True):
            self.memory.add(window, second, cost)
        return 0, 0, counts

    def extra_tokens_in_memory(self, windows: list[Window], tokens: int) -> None:
        second = int(time.time())
        for window in windows:
            if window.kind == "tokens":
                self.memory.add(window, second, tokens)
