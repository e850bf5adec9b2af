"""A real Celery worker, started by the test, takes a task from a real broker and changes the
database. CI runs it against Redis (CELERY_BROKER_URL); with no broker configured it uses
Kombu's file transport, which also crosses processes, so the test runs everywhere."""

from datetime import UTC, datetime, timedelta

import pytest

from billing.models import Subscription
from billing.services import subscribe
from portal.services import SYSTEM
from tests import factories
from tests.worker import broker_for, running_worker


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_subscription_expiry_task_from_the_broker(tmp_path):
    organization = factories.make_organization("Expiring")
    subscription = subscribe(actor=SYSTEM, organization=organization, plan=factories.make_plan(),
                             started_at=datetime(2025, 1, 1, tzinfo=UTC),
                             expires_at=datetime.now(UTC) - timedelta(minutes=1))
    with running_worker(broker_for(tmp_path), tmp_path) as worker:
        worker.send("billing.tasks.expire_subscriptions")

        def expired() -> bool:
            subscription.refresh_from_db()
            return subscription.status == Subscription.Status.EXPIRED

        worker.wait_until(expired)
    output = worker.log()
    assert subscription.status == Subscription.Status.EXPIRED, output[-4000:]
    assert "billing.tasks.expire_subscriptions" in output and "succeeded" in output
