"""RPM and TPM (API.md §12): per key, per department and per plan (the organization's), over a
moving 60-second window kept as one-second buckets: a window's count is the sum of its last 60
seconds' buckets, so it moves every second. In the shared store each window is one Redis hash
(second -> count), tested and counted by portal.gateway.admission's script in the same round
trip as the budget reservations; without Redis the same buckets live in this process's memory
(one process only: the development server, the tests).

A call is admitted only if every window has room, and then counted in all of them at once, so a
refused call costs no window anything. Tokens are counted as OpenAI documents its own limits:
the request's estimated prompt tokens plus its max_tokens, at admission; what the provider
reports beyond that is added when the call is metered.

Every answer carries OpenAI's `x-ratelimit-*` headers for the tightest requests and tokens
windows (the refusal adds `Retry-After`), from the counts the admission itself read.
"""

import math
from dataclasses import dataclass

from portal.gateway.errors import GatewayError

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Window:
    """One limit on one subject: `kind` is "requests" or "tokens", `subject` e.g. "key:<uuid>"."""

    kind: str
    subject: str
    limit: int

    @property
    def counter(self) -> str:
        return f"gw:rl:{self.kind}:{self.subject}"


@dataclass(frozen=True, slots=True)
class Count:
    """What a window held when the call was tested: its sum, and its oldest occupied second."""

    used: int
    oldest: int


def costs_of(windows: list[Window], tokens: int) -> list[int]:
    return [1 if window.kind == "requests" else tokens for window in windows]


def _duration(seconds: float) -> bytes:
    # OpenAI writes resets as durations: "1s", "6m0s", "20ms".
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms".encode()
    seconds = math.ceil(seconds)
    return (f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s").encode()


def _reset(count: Count, now: float) -> float:
    """Seconds until the window's oldest counted second leaves it."""
    return max(count.oldest + WINDOW_SECONDS - now, 0.0)


def headers(windows: list[Window], counts: list[Count], costs: list[int], now: float, *,
            admitted: bool) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for the tightest requests window and the tightest tokens
    window; an admitted call's own cost is already taken from the remaining count."""
    result: list[tuple[bytes, bytes]] = []
    for kind in ("requests", "tokens"):
        mine = [(window.limit - count.used - (cost if admitted else 0), window, count)
                for window, count, cost in zip(windows, counts, costs, strict=True) if window.kind == kind]
        if not mine:
            continue
        remaining, window, count = min(mine, key=lambda entry: entry[0])
        result += [(f"x-ratelimit-limit-{kind}".encode(), str(window.limit).encode()),
                   (f"x-ratelimit-remaining-{kind}".encode(), str(max(remaining, 0)).encode()),
                   (f"x-ratelimit-reset-{kind}".encode(), _duration(_reset(count, now)))]
    return result


def refusal(windows: list[Window], counts: list[Count], costs: list[int], now: float) -> GatewayError:
    """The 429, with OpenAI's headers and a Retry-After of the longest wait among the full windows."""
    full = [(window, count) for window, count, cost in zip(windows, counts, costs, strict=True)
            if count.used + cost > window.limit]
    retry_after = max([1.0, *(_reset(count, now) for _window, count in full)])
    subject = full[0][0]
    return GatewayError("rate_limit_exceeded",
                        f"Rate limit reached for {subject.kind} per minute ({subject.subject.split(':')[0]}): "
                        f"limit {subject.limit}. Retry after {math.ceil(retry_after)} s.",
                        headers=[*headers(windows, counts, costs, now, admitted=False),
                                 (b"retry-after", str(math.ceil(retry_after)).encode())])


class MemoryWindows:
    """The windows' one-second buckets in this process (no Redis)."""

    def __init__(self) -> None:
        self._buckets: dict[str, dict[int, int]] = {}

    def count(self, window: Window, now: int) -> Count:
        buckets = self._buckets.get(window.counter)
        if not buckets:
            return Count(0, now)
        for second in [second for second in buckets if second <= now - WINDOW_SECONDS]:
            del buckets[second]
        return Count(sum(buckets.values()), min(buckets, default=now))

    def add(self, window: Window, now: int, amount: int) -> None:
        buckets = self._buckets.setdefault(window.counter, {})
        buckets[now] = buckets.get(now, 0) + amount
