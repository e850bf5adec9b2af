"""Metering (API.md §12): every call, successful or not, becomes one usage event, handed to the
ingestion path that `POST /api/v1/usage/events` uses (billing.services.record_usage: events,
rollups, ledger charges and hard limits in one transaction), in batches.

The hand-over, and why a crash loses nothing acknowledged:
- When a call ends, its event is pushed onto a list in the shared store (Redis), in one
  transaction with the settlement of its budget reservation, *before* the last byte of the answer
  is sent (the plain body, or a stream's `[DONE]`). A client that got its whole answer therefore
  has its event in Redis, whatever happens to this process afterwards.
- Each worker's flusher moves up to BATCH events at a time from that list to its own in-flight
  list (one atomic script), ingests them, and only then deletes the in-flight list. A worker that
  dies mid-batch stops refreshing its heartbeat; any other worker's flusher moves the orphaned
  in-flight list back to the shared one. Replaying a batch is harmless: ingestion skips a
  request_id it already stored.
- Without Redis (the development server, the tests' single process) the list is this process's
  memory, flushed on shutdown; a crash there loses what was not yet flushed.
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
BATCH = 500
FLUSH_SECONDS = 1.0  # events reach the dashboards well within API.md's 5 seconds; bigger batches cost less per event
HEARTBEAT_SECONDS = 15
RECOVER_EVERY_SECONDS = 5.0

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
    """Store a batch through the ingestion path (sync: run in the gateway's threads). Events the
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
    def __init__(self, redis, reservations: Reservations,
                 run_sync: Callable[..., Awaitable], worker_id: str | None = None) -> None:
        self.redis = redis
        self.reservations = reservations
        self.run_sync = run_sync
        self.worker_id = worker_id or uuid.uuid4().hex
        self.inflight = INFLIGHT_PREFIX + self.worker_id
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        if redis is not None:
            self._take = redis.register_script(_TAKE)
            self._give_back = redis.register_script(_GIVE_BACK)
        self._last_recovery = 0.0

    async def record(self, event: dict, reservation: Reservation | None, actual_units: int,
                     extra_tokens: tuple[list[str], int] | None = None) -> None:
        """Hand one event over, settle its reservation and add the tokens the provider reported
        beyond what admission counted (`extra_tokens`: the tokens windows' hashes, how many), in
        one transaction: one round trip when Redis is there, durable before the answer ends."""
        payload = msgspec.json.encode(event)
        if self.redis is None:
            if reservation is not None:
                self.reservations.settle_in_memory(reservation, actual_units)
            self._pending.append(payload)
        else:
            async with self.redis.pipeline(transaction=True) as pipe:
                if reservation is not None:
                    for counter in reservation.counters:
                        pipe.incrby(counter, actual_units - reservation.units)
                if extra_tokens is not None:
                    counters, tokens = extra_tokens
                    second = int(time.time())
                    for counter in counters:
                        pipe.hincrby(counter, second, tokens)
                        pipe.expire(counter, WINDOW_SECONDS + 1)
                pipe.rpush(SPOOL, payload)
                await pipe.execute()
        if len(self._pending) >= BATCH:
            self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                while await self.flush_once() >= BATCH:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("metering flush failed; the batch stays queued and is retried")
                await asyncio.sleep(1.0)

    async def flush_once(self) -> int:
        """Ingest one batch; returns its size (0: nothing was waiting)."""
        if self.redis is None:
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            if batch:
                try:
                    await self.run_sync(ingest_batch, [msgspec.json.decode(item) for item in batch])
                except Exception:
                    self._pending[:0] = batch
                    raise
            return len(batch)
        await self.redis.set(ALIVE_PREFIX + self.worker_id, 1, ex=HEARTBEAT_SECONDS)
        if time.monotonic() - self._last_recovery > RECOVER_EVERY_SECONDS:
            self._last_recovery = time.monotonic()
            await self._recover_orphans()
        # A batch left in flight by a failed attempt goes first.
        batch = await self.redis.lrange(self.inflight, 0, -1)
        if not batch:
            batch = await self._take(keys=[SPOOL, self.inflight], args=[BATCH])
        if not batch:
            return 0
        await self.run_sync(ingest_batch, [msgspec.json.decode(item) for item in batch])
        await self.redis.delete(self.inflight)
        return len(batch)

    async def _recover_orphans(self) -> None:
        async for key in self.redis.scan_iter(match=INFLIGHT_PREFIX + "*", count=100):
            name = key.decode() if isinstance(key, bytes) else key
            worker = name[len(INFLIGHT_PREFIX):]
            if worker != self.worker_id and not await self.redis.exists(ALIVE_PREFIX + worker):
                moved = await self._give_back(keys=[name, SPOOL])
                logger.warning("metering took back %s event(s) left in flight by a stopped worker", moved)

    async def drain(self) -> None:
        """On shutdown: ingest whatever this process still holds."""
        while await self.flush_once():
            pass
        if self.redis is not None:
            await self.redis.delete(ALIVE_PREFIX + self.worker_id)
