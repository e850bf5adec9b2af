"""A real Celery worker for tests: started as a subprocess on the test database, fed through a real
broker (CELERY_BROKER_URL, Redis in CI; otherwise Kombu's file transport, which also crosses
processes, so these tests run everywhere)."""

import contextlib
import os
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery.exceptions import AlwaysEagerIgnored
from django.conf import settings
from django.db import connection
from kombu import Connection

from portal.celery import app

PROJECT = Path(settings.BASE_DIR)


@dataclass(frozen=True)
class Broker:
    url: str
    transport_options: dict[str, str]
    env: dict[str, str]  # what a worker process needs besides the URL


def broker_for(tmp_path: Path) -> Broker:
    if settings.CELERY_BROKER_URL:
        return Broker(settings.CELERY_BROKER_URL, {}, {})
    folder = tmp_path / "broker"
    (folder / "queue").mkdir(parents=True)
    (folder / "processed").mkdir()
    (folder / "control").mkdir()
    options = {"data_folder_in": str(folder / "queue"), "data_folder_out": str(folder / "queue"),
               "processed_folder": str(folder / "processed"), "control_folder": str(folder / "control")}
    return Broker("filesystem://", options, {"CELERY_FILESYSTEM_DIR": str(folder)})


def database_url_of_test_database() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@dataclass
class RunningWorker:
    queue: str  # a queue of the test's own: no other worker can take its tasks
    broker: Broker
    process: subprocess.Popen
    log_path: Path

    def send(self, task_name: str, *args: Any) -> None:
        # send_task always publishes to the broker, even where the app otherwise runs tasks eagerly.
        with (Connection(self.broker.url, transport_options=self.broker.transport_options) as conn,
              warnings.catch_warnings()):
            warnings.simplefilter("ignore", AlwaysEagerIgnored)
            app.send_task(task_name, args=args, queue=self.queue, connection=conn)

    def wait_until(self, condition: Callable[[], bool], *, timeout: float = 90) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if condition():
                return True
            time.sleep(0.5)
        return condition()

    def log(self) -> str:
        return self.log_path.read_text()


@contextlib.contextmanager
def running_worker(broker: Broker, tmp_path: Path, *, concurrency: int = 1) -> Iterator[RunningWorker]:
    """A worker on the test database; `concurrency` > 1 starts a prefork pool of that many processes."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "DATABASE_URL": database_url_of_test_database(), "CELERY_BROKER_URL": broker.url,
           **broker.env}
    pool = ["--pool=solo", "--concurrency=1"] if concurrency == 1 else ["--pool=prefork",
                                                                         f"--concurrency={concurrency}"]
    log_path = tmp_path / f"worker-{queue}.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", "worker", *pool, "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-Q", queue, "--loglevel=INFO"],
            cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            yield RunningWorker(queue, broker, process, log_path)
        finally:
            process.terminate()
            process.wait(timeout=30)
