"""The gateway served for real on loopback (uvicorn, in a thread, with portal.asgi as in
production) in front of the stand-in provider (bench/standin_provider.py), called with the
official `openai` client. Tests are transactional: the gateway's own threads read what the test
wrote."""

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


@pytest.fixture
def gw(transactional_db, world, provider):
    from keys import services
    from portal.services import SYSTEM
    from tests import factories

    provider.app.seen.clear()
    model = factories.make_model("gpt-test", cny=("2", "1", "8", "0", "0"))
    upstream = services.create_upstream(actor=SYSTEM, name="stand-in", base_url=provider.base_url,
                                        api_key="sk-upstream-provider-key-0000SECRET", model_codes=["gpt-test"],
                                        timeout_seconds=2, max_retries=2)
    key, secret = factories.make_inference_key(world.research, name="app")
    with RunningGateway() as gateway:
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
