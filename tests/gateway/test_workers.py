"""Two gateway worker processes share one count (API.md §12): RPM counted in Redis by both, and a
key disabled in the portal refused by both within a second. The workers are real processes
(uvicorn serving portal.asgi, as each gunicorn worker does) on the test database, and so is the
metering consumer that stores their events (`manage.py consume_metering`, as make serve-prod runs
it): a consumer killed in the middle of a batch loses none of it."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import wait_for_events

ROOT = Path(__file__).resolve().parents[2]
HELLO = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}]}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _database_url() -> str:
    from django.db import connection

    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    return (f"postgres://{config['USER']}:{config['PASSWORD'] or ''}@{config['HOST'] or '127.0.0.1'}:"
            f"{config['PORT'] or 5432}/{config['NAME']}")


@pytest.fixture
def shared_redis(settings):
    from django.conf import settings as live

    url = live.GATEWAY_REDIS_URL or "redis://127.0.0.1:6379/7"
    # This process's cache is the workers' too, so that disabling a key reaches them.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}}
    return url


@pytest.fixture
def two_workers(gw, shared_redis):
    env = {**os.environ, "DATABASE_URL": _database_url(), "CACHE_URL": shared_redis,
           "GATEWAY_REDIS_URL": shared_redis, "CONN_MAX_AGE": "0"}
    ports = [_free_port(), _free_port()]
    workers = [subprocess.Popen([sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env)
               for port in ports]
    workers.append(subprocess.Popen([sys.executable, "manage.py", "consume_metering"], cwd=ROOT, env=env))
    urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
    try:
        deadline = time.monotonic() + 30
        for url in urls:
            while True:
                try:
                    httpx.get(f"{url}/models", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield urls
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)


def _call(url: str, secret: str) -> int:
    return httpx.post(f"{url}/chat/completions", json=HELLO, headers={"authorization": f"Bearer {secret}"},
                      timeout=10).status_code


def test_two_workers_share_one_rpm_count(gw, two_workers):
    from tests import factories

    key, secret = factories.make_inference_key(gw.world.research, name="shared", rpm_limit=4)
    statuses = [_call(two_workers[index % 2], secret) for index in range(6)]
    assert statuses.count(200) == 4 and statuses.count(429) == 2, statuses
    assert statuses[-2:] == [429, 429]
    assert len(gw.provider.app.seen) == 4
    events = wait_for_events(6, timeout=10, key=key)
    assert sorted(event.status_code for event in events) == [200] * 4 + [429] * 2


def test_a_disabled_key_stops_on_every_worker_within_a_second(gw, two_workers):
    from keys import services
    from portal.services import SYSTEM

    assert [_call(url, gw.secret) for url in two_workers] == [200, 200]
    services.disable_inference_key(actor=SYSTEM, key=gw.key)
    time.sleep(1.0)
    assert [_call(url, gw.secret) for url in two_workers] == [401, 401]
