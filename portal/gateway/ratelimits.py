"""RPM and TPM (API.md §12): per key, per department and per plan (the organization's), over a
moving 60-second window, counted by the `limits` library in the shared store (Redis: its moving
window is a Lua script, so every worker process shares one count) or in this process's memory
when no Redis is configured (one process only: the development server, the tests).

A call is admitted only if every window has room; the windows are tested first and hit after,
so a refused call costs no window anything (two racing calls may both pass the test: `hit` is
atomic per window and refuses the second, which is then refused). Tokens are counted as OpenAI
documents its own limits: the request's estimated prompt tokens plus its max_tokens, at admission;
what the provider reports beyond that is added when the call ends (only while the window has room).
"""

import asyncio
import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from portal.gateway.errors import GatewayError

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Window:
    """One limit on one subject: `kind` is "requests" or "tokens", `subject` e.g. "key:<uuid>"."""

    kind: str
    subject: str
    limit: int

    @property
    def item(self) -> RateLimitItemPerMinute:
        return _item(self.limit)


_items: dict[int, RateLimitItemPerMinute] = {}


def _item(limit: int) -> RateLimitItemPerMinute:
    item = _items.get(limit)
    if item is None:
        item = _items[limit] = RateLimitItemPerMinute(limit, namespace="gw")
    return item


def storage_for(redis_url: str) -> Storage:
    if redis_url:
        return RedisStorage("async+" + redis_url, implementation="redispy")
    return MemoryStorage()


def _duration(seconds: float) -> bytes:
    # OpenAI writes resets as durations: "1s", "6m0s", "20ms".
    if seconds < 1:
        return f"{max(int(seconds * 1000), 1)}ms".encode()
    seconds = math.ceil(seconds)
    return (f"{seconds // 60}m{seconds % 60}s" if seconds >= 60 else f"{seconds}s").encode()


class RateLimiter:
    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)

    async def admit(self, windows: list[Window], tokens: int) -> None:
        """Count one request of `tokens` tokens against every window, or refuse with 429."""
        if not windows:
            return
        costs = [1 if window.kind == "requests" else tokens for window in windows]
        tested = await asyncio.gather(*(self.limiter.test(w.item, w.kind, w.subject, cost=c)
                                        for w, c in zip(windows, costs, strict=True)))
        if all(tested):
            hits = await asyncio.gather(*(self.limiter.hit(w.item, w.kind, w.subject, cost=c)
                                          for w, c in zip(windows, costs, strict=True)))
            if all(hits):
                return
            tested = hits
        full = [window for window, ok in zip(windows, tested, strict=True) if not ok]
        raise await self._refusal(full, windows)

    async def add_tokens(self, windows: list[Window], tokens: int) -> None:
        """Tokens the provider reported beyond what admission counted (best effort: a full window
        keeps what it has)."""
        if tokens > 0:
            await asyncio.gather(*(self.limiter.hit(w.item, w.kind, w.subject, cost=tokens)
                                   for w in windows if w.kind == "tokens"), return_exceptions=True)

    async def _refusal(self, full: list[Window], windows: list[Window]) -> GatewayError:
        """The 429, with OpenAI's headers for the tightest requests and tokens windows."""
        now = time.time()
        stats = await asyncio.gather(*(self.limiter.get_window_stats(w.item, w.kind, w.subject) for w in windows))
        headers: list[tuple[bytes, bytes]] = []
        retry_after = 1.0
        for kind in ("requests", "tokens"):
            mine = [(w, s) for w, s in zip(windows, stats, strict=True) if w.kind == kind]
            if not mine:
                continue
            window, stat = min(mine, key=lambda pair: pair[1].remaining)
            reset = max(stat.reset_time - now, 0.0)
            headers += [(f"x-ratelimit-limit-{kind}".encode(), str(window.limit).encode()),
                        (f"x-ratelimit-remaining-{kind}".encode(), str(max(stat.remaining, 0)).encode()),
                        (f"x-ratelimit-reset-{kind}".encode(), _duration(reset))]
        for window, stat in zip(windows, stats, strict=True):
            if window in full:
                retry_after = max(retry_after, stat.reset_time - now)
        headers.append((b"retry-after", str(math.ceil(retry_after)).encode()))
        subject = full[0]
        return GatewayError("rate_limit_exceeded",
                            f"Rate limit reached for {subject.kind} per minute ({subject.subject.split(':')[0]}): "
                            f"limit {subject.limit}. Retry after {math.ceil(retry_after)} s.", headers=headers)
