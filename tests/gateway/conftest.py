"""The gateway served for real on loopback (uvicorn, in a thread, with portal.asgi as in
production) in front of the stand-in provider (bench/standin_provider.py), called with the
official `openai` client. Tests are transactional: the gateway's own threads read what the test
wrote. With Redis (GATEWAY_REDIS_URL, as in CI) the gateway only hands its events over, and a
metering consumer (portal.gateway.metering.MeterConsumer, what `manage.py consume_metering` runs)
stores them from a thread of the test process, on the same Redis and database; without Redis the
gateway stores its own."""

import contextlib
import threading
import time
from dataclasses import dataclass

import openai
import pytest

from bench.standin_provider import RunningProvider, ServedInThread

SECRET_PROMPT = "the launch code is ZEBRA-7731-QUOKKA"


class RunningGateway(ServedInThread):
    """portal.asgi, lifespan on, as a worker of make serve-prod runs it."""

    def __init__(self) -> None:
        from portal.asgi import application

        super().__init__(application, name="the gateway", lifespan="on", start_seconds=15, stop_seconds=30)


@pytest.fixture(scope="session")
def provider():
    with RunningProvider() as running:
        yield running


@dataclass
class Setup:
    world: object
    model: object
    upstream: object
    key: object
    secret: str
    gateway: RunningGateway
    provider: RunningProvider

    def client(self, secret: str | None = None, **options) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=secret or self.secret, **options)

    def async_client(self, secret: str | None = None, **options) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.gateway.base_url, api_key=secret or self.secret, **options)


@contextlib.contextmanager
def metering_consumer(redis_url: str):
    """A metering consumer in a thread until exit; then whatever is still waiting is stored, so
    that no event of this test reaches the next one's database."""
    import redis
    from django.db import connections

    from portal.gateway.metering import MeterConsumer

    consumer = MeterConsumer(redis.Redis.from_url(redis_url))
    stop = threading.Event()

    def run() -> None:
        try:
            consumer.run(stop.is_set)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, name="metering-consumer", daemon=True)
    thread.start()
    try:
        yield consumer
    finally:
        stop.set()
        thread.join(timeout=30)
        while consumer.flush_once():
            pass


@pytest.fixture
def gw(transactional_db, world, provider):
    from django.conf import settings

    from keys import services
    from portal.services import SYSTEM
    from tests import factories

    provider.app.seen.clear()
    model = factories.make_model("gpt-test", cny=("2", "1", "8", "0", "0"))
    upstream = services.create_upstream(actor=SYSTEM, name="stand-in", base_url=provider.base_url,
                                        api_key="sk-upstream-provider-key-0000SECRET", model_codes=["gpt-test"],
                                        timeout_seconds=2, max_retries=2)
    key, secret = factories.make_inference_key(world.research, name="app")
    redis_url = settings.GATEWAY_REDIS_URL
    with (metering_consumer(redis_url) if redis_url else contextlib.nullcontext()), RunningGateway() as gateway:
        yield Setup(world, model, upstream, key, secret, gateway, provider)


def wait_for_events(count: int, timeout: float = 5.0, **filters):
    """The usage events the gateway metered (within API.md's 5 seconds)."""
    from usage.models import UsageEvent

    deadline = time.monotonic() + timeout
    while True:
        events = list(UsageEvent.objects.filter(**filters).order_by("id"))
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.05)
