"""The metering consumer (portal.gateway.metering.MeterConsumer, `manage.py consume_metering`):
what the gateway workers handed over to Redis is stored exactly once, whatever point a consumer
dies at. Real Redis (GATEWAY_REDIS_URL, or db 7 of the local server as tests/gateway/test_workers
uses) and the real database; a death is the consumer stopping between two of its steps, its
heartbeat expiring (deleted here rather than waited for)."""

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from portal.gateway import metering
from portal.gateway.metering import ALIVE_PREFIX, INFLIGHT_PREFIX, SPOOL, Meter, MeterConsumer


class Died(Exception):
    """The consumer's process ending at this point."""


@pytest.fixture
def redis_url(settings):
    from django.conf import settings as live

    url = live.GATEWAY_REDIS_URL or "redis://127.0.0.1:6379/7"
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(match="gw:meter:*"):
        client.delete(key)
    return url


@pytest.fixture
def hello_model():
    from tests import factories

    return factories.make_model("gpt-test", cny=("2", "1", "8", "0", "0"))


def _events(key, count: int) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    return [{"request_id": uuid.uuid4().hex, "timestamp": now, "key_id": str(key.uuid), "model": "gpt-test",
             "prompt_tokens": 10, "completion_tokens": 12, "cached_tokens": 0, "cache_creation_tokens": 0,
             "input_chars": 20, "output_chars": 30, "latency_ms": 5, "status_code": 200, "error_type": None}
            for _ in range(count)]


def _hand_over(redis_url: str, events: list[dict]) -> None:
    """As a gateway worker does (Meter.record, its Redis transaction), without a reservation."""
    async def record_all() -> None:
        client = aioredis.from_url(redis_url)
        meter = Meter(client, reservations=None, run_sync=None)
        for event in events:
            await meter.record(event, None, 0)
        await client.aclose()

    asyncio.run(record_all())


def _die(*_args, **_kwargs):
    raise Died


def test_a_worker_with_redis_only_hands_over_and_a_consumer_stores_every_event(transactional_db, world, hello_model,
                                                                              redis_url):
    from tests import factories
    from usage.models import UsageEvent

    key, _secret = factories.make_inference_key(world.research)
    events = _events(key, 7)
    _hand_over(redis_url, events)
    client = redis.Redis.from_url(redis_url)
    assert client.llen(SPOOL) == 7 and UsageEvent.objects.count() == 0

    consumer = MeterConsumer(client)
    assert consumer.flush_once() == 7
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == sorted(e["request_id"] for e in events)
    assert client.llen(SPOOL) == 0 and not client.exists(consumer.inflight)
    assert consumer.flush_once(wait_seconds=0.2) == 0  # nothing waiting: it waited in Redis and came back empty


def test_a_consumer_that_dies_before_storing_its_batch_loses_none_of_it(transactional_db, world, hello_model,
                                                                       redis_url, monkeypatch):
    from tests import factories
    from usage.models import UsageEvent

    key, _secret = factories.make_inference_key(world.research)
    events = _events(key, 5)
    _hand_over(redis_url, events)
    client = redis.Redis.from_url(redis_url)

    doomed = MeterConsumer(client)
    with monkeypatch.context() as patch:
        patch.setattr(metering, "ingest_batch", _die)
        with pytest.raises(Died):
            doomed.flush_once()
    # The batch left the shared list and sits in the dead consumer's in-flight list, stored nowhere.
    assert client.llen(SPOOL) == 0 and client.llen(INFLIGHT_PREFIX + doomed.consumer_id) == 5
    assert UsageEvent.objects.count() == 0

    survivor = MeterConsumer(client)
    assert survivor.recover_orphans() == 0  # the doomed one's heartbeat still runs: its batch is its own
    client.delete(ALIVE_PREFIX + doomed.consumer_id)  # ... until it expires
    assert survivor.flush_once() == 5
    assert UsageEvent.objects.count() == 5
    assert not client.exists(INFLIGHT_PREFIX + doomed.consumer_id) and client.llen(SPOOL) == 0


def test_a_consumer_that_dies_after_storing_and_before_forgetting_is_replayed_once(transactional_db, world,
                                                                                   hello_model, redis_url,
                                                                                   monkeypatch):
    from tests import factories
    from usage.models import UsageEvent

    key, _secret = factories.make_inference_key(world.research)
    _hand_over(redis_url, _events(key, 4))
    client = redis.Redis.from_url(redis_url)

    doomed = MeterConsumer(client)
    stored = metering.ingest_batch

    def store_then_die(batch):
        stored(batch)
        raise Died

    with monkeypatch.context() as patch:
        patch.setattr(metering, "ingest_batch", store_then_die)
        with pytest.raises(Died):
            doomed.flush_once()
    assert UsageEvent.objects.count() == 4 and client.llen(INFLIGHT_PREFIX + doomed.consumer_id) == 4

    client.delete(ALIVE_PREFIX + doomed.consumer_id)
    survivor = MeterConsumer(client)
    assert survivor.flush_once() == 4  # the batch again: ingestion skips the request_ids it has
    assert UsageEvent.objects.count() == 4
    assert not client.exists(INFLIGHT_PREFIX + doomed.consumer_id)


def test_a_batch_that_fails_stays_in_flight_and_goes_first_next_time(transactional_db, world, hello_model, redis_url,
                                                                     monkeypatch):
    from tests import factories
    from usage.models import UsageEvent

    key, _secret = factories.make_inference_key(world.research)
    first, later = _events(key, 3), _events(key, 2)
    _hand_over(redis_url, first)
    client = redis.Redis.from_url(redis_url)
    consumer = MeterConsumer(client)
    with monkeypatch.context() as patch:
        patch.setattr(metering, "ingest_batch", _die)
        with pytest.raises(Died):
            consumer.flush_once()
    _hand_over(redis_url, later)
    assert consumer.flush_once() == 3  # its own in-flight batch first, before anything newer
    assert set(UsageEvent.objects.values_list("request_id", flat=True)) == {e["request_id"] for e in first}
    assert consumer.flush_once() == 2 and UsageEvent.objects.count() == 5


def test_the_workers_warn_when_events_wait_and_no_consumer_is_alive(redis_url, caplog):
    async def watch() -> None:
        client = aioredis.from_url(redis_url)
        await client.rpush(SPOOL, msgspec.json.encode({"request_id": "waiting"}))
        await Meter(client, reservations=None, run_sync=None)._watch_consumers()
        await client.delete(SPOOL)
        await client.aclose()

    with caplog.at_level("WARNING", logger="portal.gateway.metering"):
        asyncio.run(watch())
    assert "no metering consumer is alive" in caplog.text
