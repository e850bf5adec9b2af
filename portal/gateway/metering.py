"""Metering (API.md §12): every call, successful or not, becomes one usage event, handed to the
ingestion path that `POST /api/v1/usage/events` uses (billing.services.record_usage: events,
rollups, ledger charges and hard limits in one transaction), in batches.

Two halves, in two kinds of process (with Redis, i.e. in production):
- The gateway workers only hand events over (`Meter.record`): when a call ends, its event is
  pushed onto a list in the shared store, in one atomic script with the settlement of its budget
  reservation, *before* the last byte of the answer is sent (the plain body, or a stream's
  `[DONE]`). A client that got its whole answer therefore has its event in Redis, whatever
  happens to the worker afterwards.
- A consumer process (`MeterConsumer`, `python manage.py consume_metering`, started beside
  gunicorn by `make serve-prod`) stores them. It used to run in every worker's threads, where
  `record_usage` of ~300 events a second held the GIL for tens of milliseconds each second and
  stalled the event loop behind it: most of the gateway's p99 (bench/RESULTS.md, 2026-12-06).

Why a crash of the consumer loses nothing acknowledged: it moves events from the shared list to
its own in-flight list atomically (BLMOVE for the first, one script for up to BATCH more), stores
them, and only after `record_usage` committed deletes the in-flight list. A consumer that dies
before that stops refreshing its heartbeat; any other consumer (or the next one started) moves
the orphaned in-flight list back to the
shared one once the heartbeat has expired (HEARTBEAT_SECONDS). Replaying a batch is harmless:
ingestion skips a request_id it already stored. Any number of consumers may run; the gateway
workers log a warning when events wait and no consumer is alive.

Without Redis (the development server, tests run without one) the list is the gateway process's
memory, stored by a flusher on its own event loop (`Meter.run`, `record_usage` in its threads)
and drained on shutdown; a crash there loses what was not yet stored.
An event the ingestion path rejects (say, its model lost its price) is logged by request_id and
dropped, so one bad event cannot hold back the others; the batch is retried without it.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import msgspec
from django.db import close_old_connections

from billing.services import record_usage
from portal.gateway.ratelimits import WINDOW_SECONDS
from portal.gateway.reservations import Reservation, Reservations
from usage.services import IngestValidationError

logger = logging.getLogger(__name__)

SPOOL = "gw:meter:spool"
INFLIGHT_PREFIX = "gw:meter:inflight:"
ALIVE_PREFIX = "gw:meter:alive:"
CONSUMER_ALIVE = "gw:meter:consumer-alive"  # set by every consumer: the workers' watch reads one key
BATCH = 500
FLUSH_SECONDS = 1.0  # without Redis; events reach the dashboards well within API.md's 5 seconds
WAIT_SECONDS = 1.0  # a consumer's longest sleep in Redis (it refreshes its heartbeat and checks for a stop between)
GATHER_SECONDS = 1.0  # a consumer's shortest cycle under load (MeterConsumer.run); bigger batches cost less per event
HEARTBEAT_SECONDS = 15
RECOVER_EVERY_SECONDS = 5.0
WATCH_SECONDS = 10.0

# One call's hand-over, atomic as a script is: settle its reservation (KEYS[1..n] += ARGV[2]), add
# the tokens the provider reported beyond what admission counted to its tokens windows (the next
# keys, ARGV[3] tokens in the second ARGV[4]), and push its event (ARGV[5]) onto the spool (the
# last key). One EVALSHA costs the worker about half the Python of the same as a MULTI/EXEC
# pipeline of commands (0.11 against 0.19 ms, 32 in flight; bench/RESULTS.md 2026-12-06).
_HAND_OVER = """
local n = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
for i = 1, n do redis.call('INCRBY', KEYS[i], delta) end
local tokens = tonumber(ARGV[3])
for i = n + 1, #KEYS - 1 do
  redis.call('HINCRBY', KEYS[i], ARGV[4], tokens)
  redis.call('EXPIRE', KEYS[i], __WINDOW__ + 1)
end
redis.call('RPUSH', KEYS[#KEYS], ARGV[5])
return 1
""".replace("__WINDOW__", str(WINDOW_SECONDS))
_TAKE = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], #items, -1)
redis.call('RPUSH', KEYS[2], unpack(items))
return items
"""
_GIVE_BACK = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
if #items > 0 then redis.call('RPUSH', KEYS[2], unpack(items)) end
redis.call('DEL', KEYS[1])
return #items
"""


def ingest_batch(events: list[dict]) -> int:
    """Store a batch through the ingestion path (sync: run by a consumer, or without Redis in the
    gateway's threads). Events the
    validation rejects are dropped by request_id and the rest stored. Returns how many were dropped."""
    close_old_connections()
    dropped = 0
    try:
        while events:
            try:
                record_usage(events)
                return dropped
            except IngestValidationError as error:
                bad = {problem.index for problem in error.errors if problem.index is not None}
                if not bad:
                    bad = set(range(len(events)))
                for index in sorted(bad):
                    reasons = "; ".join(f"{p.field}: {p.message}" for p in error.errors if p.index == index)
                    logger.error("metering dropped event %s: %s", events[index].get("request_id"), reasons)
                dropped += len(bad)
                events = [event for index, event in enumerate(events) if index not in bad]
        return dropped
    finally:
        close_old_connections()


class Meter:
    """The gateway worker's half: hands each call's event over (and, without Redis only, stores
    them itself)."""

    def __init__(self, redis, reservations: Reservations, run_sync: Callable[..., Awaitable]) -> None:
        self.redis = redis
        self.reservations = reservations
        self.run_sync = run_sync
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._warned_at = 0.0
        self._hand_over = redis.register_script(_HAND_OVER) if redis is not None else None

    async def record(self, event: dict, reservation: Reservation | None, actual_units: int,
                     extra_tokens: tuple[list[str], int] | None = None) -> None:
        """Hand one event over, settle its reservation and add the tokens the provider reported
        beyond what admission counted (`extra_tokens`: the tokens windows' hashes, how many), in
        one atomic script: one round trip when Redis is there, durable before the answer ends."""
        payload = msgspec.json.encode(event)
        if self.redis is None:
            if reservation is not None:
                self.reservations.settle_in_memory(reservation, actual_units)
            self._pending.append(payload)
            if len(self._pending) >= BATCH:
                self._wake.set()
            return
        settled = reservation.counters if reservation is not None else ()
        counters, tokens = extra_tokens if extra_tokens is not None else ([], 0)
        await self._hand_over(keys=[*settled, *counters, SPOOL],
                              args=[len(settled), actual_units - reservation.units if reservation is not None else 0,
                                    tokens, int(time.time()), payload])

    async def run(self) -> None:
        """The worker's background task: without Redis, store the pending events every
        FLUSH_SECONDS; with Redis, only watch that a consumer is there to store them."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS if self.redis is None else WATCH_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                if self.redis is None:
                    while await self.flush_once() >= BATCH:
                        pass
                else:
                    await self._watch_consumers()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("metering flush failed; the batch stays queued and is retried")
                await asyncio.sleep(1.0)

    async def _watch_consumers(self) -> None:
        if await self.redis.exists(CONSUMER_ALIVE):
            return
        waiting = await self.redis.llen(SPOOL)
        if waiting and time.monotonic() - self._warned_at > 60:
            self._warned_at = time.monotonic()
            logger.warning("%s metered event(s) wait in Redis and no metering consumer is alive: start "
                           "`python manage.py consume_metering` (make serve-prod does)", waiting)

    async def flush_once(self) -> int:
        """Without Redis: store one batch of this process's events; returns its size."""
        batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
        if batch:
            try:
                await self.run_sync(ingest_batch, [msgspec.json.decode(item) for item in batch])
            except Exception:
                self._pending[:0] = batch
                raise
        return len(batch)

    async def drain(self) -> None:
        """On shutdown, without Redis: store whatever this process still holds (with Redis the
        events are the consumers' already)."""
        if self.redis is None:
            while await self.flush_once():
                pass


class MeterConsumer:
    """The consumer's half (its own process: `python manage.py consume_metering`): moves events
    from the shared list to its in-flight list, stores them, then forgets them. Sync code: it has
    nothing else to do while `record_usage` runs."""

    def __init__(self, redis, consumer_id: str | None = None) -> None:
        self.redis = redis
        self.consumer_id = consumer_id or uuid.uuid4().hex
        self.inflight = INFLIGHT_PREFIX + self.consumer_id
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)
        self._last_recovery = 0.0
        self.stored = 0

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Store batches until should_stop() (checked at least every WAIT_SECONDS); a failed
        batch stays in flight and is retried. After an idle spell the first event is stored at
        once; under load one transaction every GATHER_SECONDS at most, unless batches are full:
        one transaction for many events costs less per event."""
        try:
            while not should_stop():
                cycle = time.monotonic()
                try:
                    stored = self.flush_once(wait_seconds=WAIT_SECONDS)
                except Exception:
                    logger.exception("metering consumer: a batch failed; it stays in flight and is retried")
                    time.sleep(1.0)
                    continue
                if stored and stored < BATCH:
                    while not should_stop() and time.monotonic() - cycle < GATHER_SECONDS:
                        time.sleep(min(0.05, GATHER_SECONDS))
        finally:
            self.redis.delete(ALIVE_PREFIX + self.consumer_id)

    def flush_once(self, wait_seconds: float = 0.0) -> int:
        """Store one batch (waiting up to wait_seconds in Redis for a first event); returns its size."""
        self._heartbeat()
        if time.monotonic() - self._last_recovery > RECOVER_EVERY_SECONDS:
            self._last_recovery = time.monotonic()
            self.recover_orphans()
        # A batch left in flight by a failed attempt goes first.
        batch = self.redis.lrange(self.inflight, 0, -1)
        if not batch:
            batch = self._take(keys=[SPOOL, self.inflight], args=[BATCH])
        if not batch and wait_seconds:
            if self.redis.blmove(SPOOL, self.inflight, wait_seconds, "LEFT", "RIGHT") is None:
                return 0
            if BATCH > 1:
                self._take(keys=[SPOOL, self.inflight], args=[BATCH - 1])
            batch = self.redis.lrange(self.inflight, 0, -1)
        if not batch:
            return 0
        self._heartbeat()
        ingest_batch([msgspec.json.decode(item) for item in batch])
        self.redis.delete(self.inflight)
        self.stored += len(batch)
        return len(batch)

    def _heartbeat(self) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(ALIVE_PREFIX + self.consumer_id, 1, ex=HEARTBEAT_SECONDS)
            pipe.set(CONSUMER_ALIVE, 1, ex=HEARTBEAT_SECONDS)
            pipe.execute()

    def recover_orphans(self) -> int:
        """Move the in-flight lists of consumers whose heartbeat expired back to the shared list."""
        moved = 0
        for key in self.redis.scan_iter(match=INFLIGHT_PREFIX + "*", count=100):
            name = key.decode() if isinstance(key, bytes) else key
            owner = name[len(INFLIGHT_PREFIX):]
            if owner != self.consumer_id and not self.redis.exists(ALIVE_PREFIX + owner):
                count = self._give_back(keys=[name, SPOOL])
                if count:
                    logger.warning("metering took back %s event(s) left in flight by a stopped consumer", count)
                moved += count
        return moved
