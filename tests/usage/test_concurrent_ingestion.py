"""The same batch arriving on two connections at once is stored, and counted, once."""

import threading

import pytest
from django.db import connection

from tests import factories
from usage.models import UsageEvent
from usage.rollups import LEVELS
from usage.services import ingest_events


@pytest.mark.django_db(transaction=True)
def test_two_connections_replaying_one_batch_store_and_count_it_once():
    organization = factories.make_organization("Racy")
    key, _ = factories.make_inference_key(factories.make_department(organization, "Team"))
    model = factories.make_model("qwen-plus")
    batch = [factories.event(key, model, request_id=f"race-{i}", timestamp=f"2026-01-01T00:{i % 60:02d}:00Z")
             for i in range(400)]
    barrier = threading.Barrier(2)
    results, failures = [], []

    def send() -> None:
        try:
            barrier.wait()
            results.append(ingest_events(batch))
        except Exception as error:  # surfaced below with the real cause
            failures.append(error)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert sorted((r.accepted, r.duplicates) for r in results) == [(0, 400), (400, 0)]
    assert UsageEvent.objects.count() == 400
    for level in LEVELS:
        assert sum(level.model.objects.values_list("requests", flat=True)) == 400, level.model.__name__
