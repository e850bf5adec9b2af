"""The durable queue of unfolded batches (usage/folding.py): the ingest transaction stores raw
events and queues them; a folder folds them into every level and dequeues them in one
transaction. Nothing is lost when the process dies between the commit and the fold, nothing is
counted twice when a fold dies half-way or two folders race, and a hard limit still sees the
crossing batch the moment it commits."""

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from billing.budgets import create_budget
from billing.models import Budget
from billing.services import record_usage
from keys import services as key_services
from portal.celery import app as celery_app
from portal.services import SYSTEM
from tests import factories
from tests.usage.raw_checks import assert_daily_levels_equal_raw_events
from usage import folding, rollups
from usage.activity import MODELS as ACTIVITY_MODELS
from usage.models import (
    UsageConversationDaily,
    UsageEvent,
    UsageFillState,
    UsageFoldQueue,
    UsageHourGroups,
    UsagePeakHourly,
)
from usage.rollups import LEVELS
from usage.selectors import data_freshness
from usage.services import ingest_events, rebuild_rollups

MARCH_10 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


@pytest.fixture
def queued(settings):
    """Folding after the commit, as with a broker; inside a test's transaction nothing commits,
    so nothing folds until a test folds: what a process killed right after the commit leaves."""
    settings.USAGE_FOLD_IN_TRANSACTION = False


def _batch(key, model, prefix: str, count: int, start: datetime = MARCH_10, **fields) -> list[dict]:
    return [factories.event(key, model, request_id=f"{prefix}-{i}",
                            timestamp=(start + timedelta(seconds=i)).isoformat(), **fields) for i in range(count)]


def _requests(organization) -> dict[str, int]:
    """Every level's request count for one organization, and the fill state's."""
    counts = {level.name: sum(level.model.objects.filter(organization=organization).values_list("requests", flat=True))
              for level in LEVELS}
    state = UsageFillState.objects.filter(organization=organization).first()
    counts["fill state"] = state.events if state else 0
    return counts


def _everywhere(count: int) -> dict[str, int]:
    return {**{level.name: count for level in LEVELS}, "fill state": count}


@pytest.fixture
def two_orgs(world):
    model = factories.make_model("qwen-plus")
    acme_key, _ = factories.make_inference_key(world.research)
    globex_key, _ = factories.make_inference_key(world.sales)
    return world, model, acme_key, globex_key


def test_a_committed_batch_waits_in_the_queue_and_one_fold_counts_it_in_every_level(queued, two_orgs):
    world, model, acme_key, globex_key = two_orgs
    result = ingest_events(_batch(acme_key, model, "a", 30, conversation_id="c1") + _batch(globex_key, model, "g", 20))
    assert (result.accepted, result.duplicates) == (30 + 20, 0)
    # Stored, and queued once per organization; no level counts them yet.
    assert UsageEvent.objects.count() == 50
    rows = {row.organization_id: row for row in UsageFoldQueue.objects.all()}
    assert sorted(rows) == sorted([world.acme.pk, world.globex.pk])
    assert rows[world.acme.pk].events == 30 and sorted(rows[world.acme.pk].event_ids) == sorted(
        UsageEvent.objects.filter(organization=world.acme).values_list("pk", flat=True))
    assert _requests(world.acme) == _everywhere(0)
    assert not any(model.objects.exists() for model in ACTIVITY_MODELS)

    assert folding.fold_pending() == 50
    assert _requests(world.acme) == _everywhere(30) and _requests(world.globex) == _everywhere(20)
    assert_daily_levels_equal_raw_events()
    assert not UsageFoldQueue.objects.exists()
    whole = {"organization": world.acme, "department_id_or_zero": 0}
    assert UsageConversationDaily.objects.filter(**whole).get().conversations == 1
    assert UsagePeakHourly.objects.filter(**whole).get().peak_requests == 30
    # Folding again finds nothing: nothing is counted twice.
    assert folding.fold_pending() == 0
    assert _requests(world.acme) == _everywhere(30)


def test_a_replayed_batch_queues_nothing_and_its_duplicates_are_counted(queued, two_orgs):
    world, model, acme_key, _ = two_orgs
    batch = _batch(acme_key, model, "r", 10)
    ingest_events(batch)
    folding.fold_pending()
    again = ingest_events(batch)
    assert (again.accepted, again.duplicates) == (0, 10)
    assert not UsageFoldQueue.objects.exists()
    assert _requests(world.acme) == _everywhere(10)


class _FolderDied(Exception):
    pass


def test_a_fold_that_dies_half_way_leaves_the_batch_queued_and_counted_nowhere(queued, two_orgs, monkeypatch):
    world, model, acme_key, _ = two_orgs
    ingest_events(_batch(acme_key, model, "k", 25))
    real_fold_stored, real_fold_events = folding.fold_stored, folding.fold_events

    # The folder dies after every level was written and before the queue row is deleted.
    def fold_then_die(real):
        def dying(*args, **kwargs):
            real(*args, **kwargs)
            raise _FolderDied

        return dying

    monkeypatch.setattr(folding, "fold_stored", fold_then_die(real_fold_stored))
    monkeypatch.setattr(folding, "fold_events", fold_then_die(real_fold_events))
    with pytest.raises(_FolderDied):
        folding.fold_pending()
    assert _requests(world.acme) == _everywhere(0)
    assert UsageFoldQueue.objects.get().events == 25

    monkeypatch.setattr(folding, "fold_stored", real_fold_stored)
    monkeypatch.setattr(folding, "fold_events", real_fold_events)
    assert folding.fold_pending() == 25
    assert _requests(world.acme) == _everywhere(25)


def test_a_fold_takes_at_most_its_budget_of_events_and_the_next_takes_the_rest(queued, two_orgs, monkeypatch):
    world, model, acme_key, _ = two_orgs
    monkeypatch.setattr(folding, "MAX_EVENTS_PER_FOLD", 15)
    for n in range(3):
        ingest_events(_batch(acme_key, model, f"b{n}", 10))
    assert folding.fold_pending() == 10  # a second batch would exceed 15
    assert _requests(world.acme) == _everywhere(10)
    assert folding.fold_until_empty() == 20
    assert _requests(world.acme) == _everywhere(30)


def test_the_management_command_folds_what_is_queued(queued, two_orgs, capsys):
    world, model, acme_key, _ = two_orgs
    ingest_events(_batch(acme_key, model, "m", 7))
    call_command("fold_usage")
    assert "7 events folded" in capsys.readouterr().out
    assert _requests(world.acme) == _everywhere(7)


def test_data_freshness_is_the_newest_event_the_levels_count_not_one_still_queued(queued, two_orgs):
    world, model, acme_key, _ = two_orgs
    ingest_events(_batch(acme_key, model, "early", 1))
    folding.fold_pending()
    ingest_events(_batch(acme_key, model, "late", 1, start=MARCH_10 + timedelta(hours=1)))
    assert folding.oldest_queued([world.acme.pk]) is not None
    end = MARCH_10 + timedelta(days=1)
    assert data_freshness(world.acme.pk, end) == MARCH_10
    folding.fold_pending()
    assert data_freshness(world.acme.pk, end) == MARCH_10 + timedelta(hours=1)
    assert folding.oldest_queued() is None


def test_a_rebuild_folds_the_queue_first_so_nothing_is_counted_twice(queued, two_orgs):
    world, model, acme_key, globex_key = two_orgs
    ingest_events(_batch(acme_key, model, "x", 12) + _batch(globex_key, model, "y", 5))
    rebuild_rollups(organization=world.acme)
    assert _requests(world.acme) == _everywhere(12)
    # Only Acme's row was folded by the rebuild; Globex's waits for the folder.
    assert list(UsageFoldQueue.objects.values_list("organization_id", flat=True)) == [world.globex.pk]
    folding.fold_until_empty()
    assert _requests(world.acme) == _everywhere(12) and _requests(world.globex) == _everywhere(5)
    assert_daily_levels_equal_raw_events()


def test_a_hard_limit_counts_queued_batches_and_stops_the_keys_when_the_crossing_batch_commits(queued, world):
    model = factories.make_model("qwen-plus")  # 0.002 CNY an event
    key, secret = factories.make_inference_key(world.research)
    other_key, _ = factories.make_inference_key(world.support)
    gateway = APIClient()
    token = key_services.create_service_token(actor=SYSTEM, name="gateway").secret
    gateway.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def verify() -> bool:
        return gateway.post("/api/v1/gateway/keys/verify", {"key": secret}, format="json").json()["budget_exhausted"]

    with time_machine.travel(MARCH_10 + timedelta(hours=1), tick=False):
        create_budget(actor=SYSTEM, organization=world.acme, scope=Budget.Scope.ORGANIZATION, amount=Decimal("0.010"),
                      hard_limit=True)
        # 0.008 spent in four batches, none folded by a folder: only their queue knows them.
        for n in range(4):
            record_usage(_batch(other_key, model, f"under{n}", 1, start=MARCH_10 + timedelta(minutes=n)))
        assert verify() is False
        record_usage(_batch(key, model, "crossing", 1, start=MARCH_10 + timedelta(minutes=10)))  # reaches 0.010
        assert verify() is True
        # The hard limit folded the organization's queue to read its spending: every level counts it all.
        assert _requests(world.acme) == _everywhere(5)
        assert not UsageFoldQueue.objects.filter(organization=world.acme).exists()


def _send(work, barrier: threading.Barrier, failures: list, results: list) -> None:
    try:
        barrier.wait()
        results.append(work())
    except Exception as error:  # surfaced by the test with the real cause
        failures.append(error)
    finally:
        connection.close()  # each thread has its own connection


@pytest.mark.django_db(transaction=True)
def test_without_a_broker_the_batch_is_folded_right_after_its_commit(settings):
    settings.USAGE_FOLD_IN_TRANSACTION = False
    model = factories.make_model("qwen-plus")
    acme = factories.make_organization("Acme", timezone="Asia/Shanghai")
    key, _ = factories.make_inference_key(factories.make_department(acme, "Research"))
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        with transaction.atomic():
            ingest_events(_batch(key, model, "e", 9))
            assert _requests(acme) == _everywhere(0)  # not before the commit
        assert _requests(acme) == _everywhere(9)  # the on_commit task ran in this process
    finally:
        celery_app.conf.task_always_eager = eager
    assert not UsageFoldQueue.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_folders_racing_each_other_and_a_hard_limit_fold_count_every_batch_exactly_once(settings):
    settings.USAGE_FOLD_IN_TRANSACTION = False
    model = factories.make_model("qwen-plus")
    acme = factories.make_organization("Acme", timezone="Asia/Shanghai")
    globex = factories.make_organization("Globex", timezone="America/New_York")
    acme_key, _ = factories.make_inference_key(factories.make_department(acme, "Research"))
    globex_key, _ = factories.make_inference_key(factories.make_department(globex, "Sales"))
    # Committed one by one, as the gateway's batches are, and their folds enqueued for a worker
    # that is down (published to the broker, never run here), so the folders below find them all.
    eager, celery_app.conf.task_always_eager = celery_app.conf.task_always_eager, False
    try:
        for n in range(8):
            with transaction.atomic():
                ingest_events(_batch(acme_key, model, f"a{n}", 40, conversation_id=f"conv-{n % 3}")
                              + _batch(globex_key, model, f"g{n}", 20))
    finally:
        celery_app.conf.task_always_eager = eager
    assert UsageFoldQueue.objects.count() == 16
    barrier = threading.Barrier(4)
    failures: list = []
    results: list = []
    works = [folding.fold_until_empty, folding.fold_until_empty, folding.fold_until_empty,
             lambda: folding.fold_pending(organization_ids=[acme.pk], wait=True)]
    threads = [threading.Thread(target=_send, args=(work, barrier, failures, results)) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    folding.fold_until_empty()  # whatever a folder skipped while another held it
    assert not UsageFoldQueue.objects.exists()
    assert _requests(acme) == _everywhere(320) and _requests(globex) == _everywhere(160)
    assert_daily_levels_equal_raw_events()
    assert UsageConversationDaily.objects.filter(organization=acme, department_id_or_zero=0).get().conversations == 3


def test_the_invoice_of_a_month_counts_its_batches_still_queued(queued, two_orgs):
    from billing.invoicing import run_billing
    from billing.models import Invoice, InvoiceLine

    world, model, acme_key, _ = two_orgs
    record_usage(_batch(acme_key, model, "march", 4))  # 4 × 0.002 CNY, committed, never folded by a folder
    assert _requests(world.acme) == _everywhere(0)
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=datetime(2026, 4, 2).date())
    invoice = Invoice.objects.get(organization=world.acme)
    usage = invoice.lines.get(kind=InvoiceLine.Kind.USAGE)
    assert usage.exact_amount == Decimal("0.008")
    assert _requests(world.acme) == _everywhere(4)


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_folds_the_committed_batches_from_the_broker(settings, tmp_path):
    import time

    from tests.celery_worker_helpers import broker_for_test, private_queue, running_worker

    settings.USAGE_FOLD_IN_TRANSACTION = False
    model = factories.make_model("qwen-plus")
    acme = factories.make_organization("Acme", timezone="Asia/Shanghai")
    key, _ = factories.make_inference_key(factories.make_department(acme, "Research"))
    eager, celery_app.conf.task_always_eager = celery_app.conf.task_always_eager, False
    try:  # committed; the fold each commit enqueues goes to the default queue, which no worker here reads
        for n in range(3):
            with transaction.atomic():
                ingest_events(_batch(key, model, f"w{n}", 11))
    finally:
        celery_app.conf.task_always_eager = eager
    assert _requests(acme) == _everywhere(0)
    broker, queue = broker_for_test(tmp_path), private_queue()
    log_path = tmp_path / "worker.log"
    with running_worker(broker, queue, log_path) as worker:
        broker.publish("usage.tasks.fold_usage", queue=queue)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None and UsageFoldQueue.objects.exists():
            time.sleep(0.3)
    assert _requests(acme) == _everywhere(33), log_path.read_text()[-4000:]
    assert "usage.tasks.fold_usage" in log_path.read_text()


@pytest.mark.django_db(transaction=True)
def test_a_writer_whose_organizations_lag_past_the_limit_folds_them_before_it_answers(settings):
    # Backpressure: with the folder down (or outrun), the queue would only grow; a writer finding
    # its organizations' oldest batch older than USAGE_FOLD_LAG_LIMIT folds them itself.
    settings.USAGE_FOLD_IN_TRANSACTION = False
    settings.USAGE_FOLD_LAG_LIMIT = 5.0
    model = factories.make_model("qwen-plus")
    acme = factories.make_organization("Acme", timezone="Asia/Shanghai")
    globex = factories.make_organization("Globex", timezone="America/New_York")
    acme_key, _ = factories.make_inference_key(factories.make_department(acme, "Research"))
    globex_key, _ = factories.make_inference_key(factories.make_department(globex, "Sales"))
    eager, celery_app.conf.task_always_eager = celery_app.conf.task_always_eager, False  # the folder is down
    try:
        ingest_events(_batch(acme_key, model, "a1", 10) + _batch(globex_key, model, "g1", 5))
        ingest_events(_batch(acme_key, model, "a2", 10))
        # Within the limit: both wait for the folder.
        assert _requests(acme) == _everywhere(0) and UsageFoldQueue.objects.count() == 3
        UsageFoldQueue.objects.filter(organization=acme).update(queued_at=timezone.now() - timedelta(seconds=6))
        ingest_events(_batch(acme_key, model, "a3", 10))
    finally:
        celery_app.conf.task_always_eager = eager
    # Acme lagged 6 s: its writer folded every Acme batch, its own too; Globex's is not its business.
    assert _requests(acme) == _everywhere(30) and _requests(globex) == _everywhere(0)
    assert list(UsageFoldQueue.objects.values_list("organization_id", flat=True)) == [globex.pk]


# Advisory locks are PostgreSQL's (SQLite has one writer at a time): defined only there, so CI
# (PostgreSQL) runs it and no run reports a skip.
if connection.vendor == "postgresql":
    @pytest.mark.django_db(transaction=True)
    def test_a_fold_started_while_another_of_its_hour_is_uncommitted_counts_a_group_once(settings):
        """Two folds of one organization's hour, the same group in two of its 15-minute slots: the
        second begins before the first commits. Its statement must see the first's fine row
        (usage.rollups.lock_organizations), or each misses the other's and both count the group."""
        settings.USAGE_FOLD_IN_TRANSACTION = False
        model = factories.make_model("qwen-plus")
        acme = factories.make_organization("Acme", timezone="Asia/Shanghai")
        key, _ = factories.make_inference_key(factories.make_department(acme, "Research"))
        eager, celery_app.conf.task_always_eager = celery_app.conf.task_always_eager, False
        try:
            with transaction.atomic():
                ingest_events(_batch(key, model, "first", 20) + _batch(key, model, "second", 20,
                                                                        start=MARCH_10 + timedelta(minutes=20)))
        finally:
            celery_app.conf.task_always_eager = eager
        ids = {prefix: list(UsageEvent.objects.filter(request_id__startswith=prefix).values_list("pk", flat=True))
               for prefix in ("first", "second")}
        first_folded, second_starting = threading.Event(), threading.Event()
        failures: list = []

        def first():
            try:
                with transaction.atomic():
                    rollups.fold_stored(ids["first"])
                    first_folded.set()
                    second_starting.wait(5)
                    time.sleep(0.5)  # the second fold is under way, waiting for this commit
            except Exception as error:  # surfaced by the test with the real cause
                failures.append(error)
            finally:
                connection.close()

        def second():
            try:
                first_folded.wait(5)
                second_starting.set()
                with transaction.atomic():
                    rollups.fold_stored(ids["second"])
            except Exception as error:
                failures.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures
        UsageFoldQueue.objects.all().delete()  # folded above, by id
        assert list(UsageHourGroups.objects.filter(organization=acme).values_list("hour", "groups")) == [
            (int(MARCH_10.timestamp()), 1)]
        assert _requests(acme) == _everywhere(40)
        assert_daily_levels_equal_raw_events()
