"""A real Celery worker for a test: a broker to publish to (Redis when CELERY_BROKER_URL is set,
else Kombu's file transport, which also crosses processes), a worker subprocess on the test
database listening on a queue of the test's own, and a way to publish a task to it."""

import os
import subprocess
import sys
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from celery.exceptions import AlwaysEagerIgnored
from django.conf import settings
from django.db import connection
from kombu import Connection

from portal.celery import app

PROJECT = Path(settings.BASE_DIR)


def database_url_of_test_database() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class Broker:
    url: str
    transport_options: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)  # what a worker needs to reach the same broker

    def publish(self, task_name: str, *, queue: str, args: list | None = None) -> None:
        # send_task always publishes to the broker, even where the app otherwise runs tasks eagerly.
        with Connection(self.url, transport_options=self.transport_options) as conn, warnings.catch_warnings():
            warnings.simplefilter("ignore", AlwaysEagerIgnored)
            app.send_task(task_name, args=args or [], queue=queue, connection=conn)


def broker_for_test(tmp_path: Path) -> Broker:
    if settings.CELERY_BROKER_URL:
        return Broker(settings.CELERY_BROKER_URL)
    folder = tmp_path / "broker"
    (folder / "queue").mkdir(parents=True)
    (folder / "processed").mkdir()
    (folder / "control").mkdir()
    options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
               "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control")}
    return Broker("filesystem://", options, {"CELERY_FILESYSTEM_DIR": str(folder)})


def private_queue() -> str:
    """A queue of the test's own: no other worker can take its tasks."""
    return f"test-{uuid.uuid4().hex[:12]}"


@contextmanager
def running_worker(broker: Broker, queue: str, log_path: Path, extra_env: dict | None = None) -> Iterator:
    """A worker subprocess on the test database, stopped when the block ends. Its output is in
    `log_path`."""
    env = {**os.environ, "DATABASE_URL": database_url_of_test_database(), "CELERY_BROKER_URL": broker.url,
           **broker.env, **(extra_env or {})}
    with log_path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo", "--concurrency=1",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue, "--loglevel=INFO"],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            worker.terminate()
            worker.wait(timeout=30)
