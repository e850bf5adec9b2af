"""A real Celery worker, started by the test, takes a task from a real broker and changes the
database. CI runs it against Redis (CELERY_BROKER_URL); with no broker configured it uses
Kombu's file transport, which also crosses processes, so the test runs everywhere."""

import os
import subprocess
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery.exceptions import AlwaysEagerIgnored
from django.conf import settings
from django.db import connection
from kombu import Connection

from billing.models import Subscription
from billing.services import subscribe
from portal.celery import app
from portal.services import SYSTEM
from tests import factories

PROJECT = Path(settings.BASE_DIR)


def _database_url_of_test_database() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def broker(tmp_path):
    if settings.CELERY_BROKER_URL:
        return settings.CELERY_BROKER_URL, {}, {}
    folder = tmp_path / "broker"
    (folder / "queue").mkdir(parents=True)
    (folder / "processed").mkdir()
    (folder / "control").mkdir()
    options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
               "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control")}
    return "filesystem://", options, {"CELERY_FILESYSTEM_DIR": str(folder)}


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_subscription_expiry_task_from_the_broker(broker, tmp_path):
    url, transport_options, extra_env = broker
    organization = factories.make_organization("Expiring")
    subscription = subscribe(actor=SYSTEM, organization=organization, plan=factories.make_plan(),
                             started_at=datetime(2025, 1, 1, tzinfo=UTC),
                             expires_at=datetime.now(UTC) - timedelta(minutes=1))
    queue = f"test-{uuid.uuid4().hex[:12]}"  # a queue of our own: no other worker can take the task
    env = {**os.environ, "DATABASE_URL": _database_url_of_test_database(), "CELERY_BROKER_URL": url, **extra_env}
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue, "--loglevel=INFO"],
        cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        # send_task always publishes to the broker, even where the app otherwise runs tasks eagerly.
        with Connection(url, transport_options=transport_options) as conn, warnings.catch_warnings():
            warnings.simplefilter("ignore", AlwaysEagerIgnored)
            app.send_task("billing.tasks.expire_subscriptions", queue=queue, connection=conn)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            subscription.refresh_from_db()
            if subscription.status == Subscription.Status.EXPIRED:
                break
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    log.seek(0)
    output = log.read()
    assert subscription.status == Subscription.Status.EXPIRED, output[-4000:]
    assert "billing.tasks.expire_subscriptions" in output and "succeeded" in output
