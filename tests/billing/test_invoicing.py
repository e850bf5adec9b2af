"""The nightly invoice job (API.md §10): Acme bills in Shanghai's months and CNY, Globex in New
York's months (DST included) and USD. Usage sits one second either side of every month boundary;
each story checks its invoices against the events' own stored costs, never against the engine."""

import threading
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.db import connection

from billing import invoicing
from billing.invoicing import Period, run_billing
from billing.models import BillingAccount, DocumentSequence, Invoice, InvoiceLine, Subscription
from billing.money import round_display_amount
from billing.services import subscribe
from portal.models import AuditLog
from portal.services import SYSTEM
from tests import factories
from usage.models import UsageEvent
from usage.services import ingest_events


def local(organization, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=organization.zone)


class Usage:
    """Ingests events and remembers which period each one belongs to, by request id."""

    def __init__(self) -> None:
        self.by_period: dict[tuple[int, date], list[str]] = defaultdict(list)

    def add(self, organization, key, model, at: datetime, *, prompt: int = 1234, completion: int = 567) -> None:
        event = factories.event(key, model, timestamp=at.isoformat(), prompt_tokens=prompt,
                                completion_tokens=completion)
        ingest_events([event])
        month = at.astimezone(organization.zone).date().replace(day=1)
        self.by_period[(organization.pk, month)].append(event["request_id"])

    def expected_lines(self, organization, month: date) -> dict[tuple[int, int], Decimal]:
        """Per (model, department): the sum of the stored costs of the events in that month."""
        sums: dict[tuple[int, int], Decimal] = defaultdict(Decimal)
        for event in UsageEvent.objects.filter(request_id__in=self.by_period[(organization.pk, month)]):
            sums[(event.model_id, event.department_id)] += event.cost
        return dict(sums)


def usage_lines_of(invoice: Invoice) -> dict[tuple[int, int], InvoiceLine]:
    return {(line.model_id, line.department_id): line for line in invoice.lines.filter(kind="usage")}


def assert_total_equals_its_parts(invoice: Invoice) -> None:
    lines = list(invoice.lines.all())
    subtotal = sum(line.amount for line in lines if line.kind in ("plan_fee", "usage", "adjustment"))
    credits = -sum((line.amount for line in lines if line.kind == "credit"), Decimal(0))
    assert invoice.subtotal == subtotal
    assert invoice.tax == round_display_amount(subtotal * invoice.tax_rate)
    assert invoice.credits_applied == credits
    assert invoice.amount == invoice.subtotal + invoice.tax - invoice.credits_applied
    for line in lines:
        assert line.amount == round_display_amount(line.exact_amount)
        assert line.amount == line.amount.quantize(Decimal("0.01"))


@pytest.fixture
def catalog(db):
    # Prices with many decimals, so that per-event costs use all 8 places and sums need rounding.
    return {"qwen": factories.make_model("qwen-plus", cny=("3.3", "0.3", "7.7", "0", "0"),
                                         usd=("0.47", "0.04", "1.11", "0", "0")),
            "deepseek": factories.make_model("deepseek-v3", cny=("2.1", "0.2", "8.3", "0", "0"),
                                             usd=("0.29", "0.03", "1.19", "0", "0"))}


@pytest.fixture
def month_of_usage(world, catalog):
    """March 2026 in both organizations, plus an event one second before and one second after it
    (and one exactly at each midnight) on each organization's own clock."""
    world.ops = factories.make_department(world.globex, "Ops")
    keys = {organization.pk: [factories.make_inference_key(department)[0] for department in departments]
            for organization, departments in ((world.acme, (world.research, world.support)),
                                              (world.globex, (world.sales, world.ops)))}
    models = [catalog["qwen"], catalog["deepseek"]]
    usage = Usage()
    BillingAccount.objects.filter(organization=world.acme).update(tax_rate=Decimal("0.06"))
    for organization in (world.acme, world.globex):
        research_or_sales, support_or_ops = keys[organization.pk]
        start, end = local(organization, 2026, 3, 1), local(organization, 2026, 4, 1)
        usage.add(organization, research_or_sales, models[0], start - timedelta(seconds=1))  # February
        usage.add(organization, research_or_sales, models[0], start)
        usage.add(organization, support_or_ops, models[1], start + timedelta(seconds=1))
        for day in range(2, 31, 3):  # through the US change to summer time on 8 March
            for index, key in enumerate((research_or_sales, support_or_ops)):
                usage.add(organization, key, models[(day + index) % 2], local(organization, 2026, 3, day, 13, 17),
                          prompt=1000 + 37 * day, completion=300 + 11 * day * (index + 1))
        usage.add(organization, support_or_ops, models[0], end - timedelta(seconds=1))
        usage.add(organization, research_or_sales, models[1], end)  # April
        usage.add(organization, support_or_ops, models[1], end + timedelta(seconds=1))
    world.usage = usage
    return world


def test_a_month_of_usage_is_one_invoice_per_organization_and_period_in_its_own_timezone(month_of_usage):
    world = month_of_usage
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        report = run_billing(date=date(2026, 4, 2))

    assert report.invoices_created == 4 and report.invoices_issued == 4 and report.accounts_failed == 0
    for organization in (world.acme, world.globex):
        invoices = list(Invoice.objects.filter(organization=organization).order_by("period_start"))
        # February holds the event one second before March; April has not ended.
        assert [(i.period_start, i.period_end) for i in invoices] == [
            (date(2026, 2, 1), date(2026, 2, 28)), (date(2026, 3, 1), date(2026, 3, 31))]
        for invoice in invoices:
            expected = world.usage.expected_lines(organization, invoice.period_start)
            lines = usage_lines_of(invoice)
            assert {key: line.exact_amount for key, line in lines.items()} == expected
            assert {key: line.amount for key, line in lines.items()} == {
                key: round_display_amount(cost) for key, cost in expected.items()}
            assert_total_equals_its_parts(invoice)
            assert invoice.status == Invoice.Status.ISSUED
            assert invoice.issued_at == datetime(2026, 4, 2, 12, tzinfo=UTC)
            assert invoice.currency == organization.billing_account.currency
        march = invoices[1]
        assert len(world.usage.by_period[(organization.pk, date(2026, 3, 1))]) == 23
        assert sum(line.quantity for line in usage_lines_of(march).values()) == sum(
            event.total_tokens for event in UsageEvent.objects.filter(
                request_id__in=world.usage.by_period[(organization.pk, date(2026, 3, 1))]))
    acme_march = Invoice.objects.get(organization=world.acme, period_start=date(2026, 3, 1))
    assert acme_march.tax_rate == Decimal("0.06") and acme_march.tax > 0
    assert acme_march.buyer["name"] == "Acme" and acme_march.seller["name"]
    line = acme_march.lines.filter(kind="usage").first()
    assert line.unit == "tokens" and line.unit_price is None and line.department.organization == world.acme
    # Each issued invoice told the organization's webhooks (API.md §10 invoice.issued).
    event = world.acme.webhook_events.get(data__invoice_no=acme_march.invoice_no)
    assert event.type == "invoice.issued"
    assert event.data == {"invoice_id": str(acme_march.uuid), "invoice_no": acme_march.invoice_no,
                          "amount": str(round_display_amount(acme_march.amount)), "currency": "CNY",
                          "period_start": "2026-03-01", "period_end": "2026-03-31"}


def test_february_of_a_leap_year_ends_on_the_29th(world, catalog):
    usage = Usage()
    for organization, department in ((world.acme, world.research), (world.globex, world.sales)):
        key, _ = factories.make_inference_key(department)
        for moment in (local(organization, 2028, 2, 28, 23, 59, 59), local(organization, 2028, 2, 29),
                       local(organization, 2028, 2, 29, 23, 59, 59), local(organization, 2028, 3, 1)):
            usage.add(organization, key, catalog["qwen"], moment)
    with time_machine.travel(datetime(2028, 3, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2028, 3, 2))

    for organization in (world.acme, world.globex):
        invoice = Invoice.objects.get(organization=organization)
        assert (invoice.period_start, invoice.period_end) == (date(2028, 2, 1), date(2028, 2, 29))
        assert len(usage.by_period[(organization.pk, date(2028, 2, 1))]) == 3
        assert {k: line.exact_amount for k, line in usage_lines_of(invoice).items()} == usage.expected_lines(
            organization, date(2028, 2, 1))
        assert_total_equals_its_parts(invoice)
    assert sorted(Invoice.objects.values_list("invoice_no", flat=True)) == ["INV-2028-000001", "INV-2028-000002"]


def _state() -> dict:
    return {
        "invoices": sorted(Invoice.objects.values_list("pk", "invoice_no", "period_start", "amount", "status",
                                                       "issued_at")),
        "lines": sorted(InvoiceLine.objects.values_list("pk", "invoice_id", "exact_amount", "amount")),
        "sequences": sorted(DocumentSequence.objects.values_list("kind", "year", "last")),
        "accounts": sorted(BillingAccount.objects.values_list("pk", "invoiced_through", "invoicing_status")),
        "audit": AuditLog.objects.filter(action__startswith="invoice.").count(),
    }


def test_a_rerun_changes_nothing(month_of_usage):
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    before = _state()
    with time_machine.travel(datetime(2026, 4, 20, 1, tzinfo=UTC), tick=False):
        again = run_billing(date=date(2026, 4, 20))
        and_again = run_billing(date=date(2026, 4, 20))

    assert _state() == before
    assert before["invoices"] and before["accounts"][0][1:] == (date(2026, 3, 31), "done")
    for report in (again, and_again):
        assert report.invoices_created == report.invoices_issued == 0
        assert report.accounts_skipped == 2
        assert {outcome.reason for outcome in report.outcomes} == {"invoiced through 2026-03-31"}


def test_a_date_in_the_future_never_bills_a_month_still_running(month_of_usage):
    world = month_of_usage
    # 1 April 02:00 UTC: March is over in Shanghai (10:00) but New York is still at 22:00 on the 31st.
    with time_machine.travel(datetime(2026, 4, 1, 2, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 5, 1))
    assert list(Invoice.objects.filter(organization=world.acme).values_list("period_start", flat=True)
                .order_by("period_start")) == [date(2026, 2, 1), date(2026, 3, 1)]
    assert list(Invoice.objects.filter(organization=world.globex).values_list("period_start", flat=True)) == [
        date(2026, 2, 1)]
    # The next night, New York's March has ended too.
    with time_machine.travel(datetime(2026, 4, 2, 2, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    assert Invoice.objects.filter(organization=world.globex, period_start=date(2026, 3, 1)).exists()


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_between_two_organizations_is_finished_by_the_next(month_of_usage, monkeypatch):
    world = month_of_usage
    real_usage_lines = invoicing.usage_lines
    killed = []

    def dies_once_on_globex(organization, period):
        if organization == world.globex and not killed:
            killed.append(period)
            raise RuntimeError("worker killed")
        return real_usage_lines(organization, period)

    monkeypatch.setattr(invoicing, "usage_lines", dies_once_on_globex)
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        with pytest.raises(RuntimeError, match="worker killed"):
            run_billing(date=date(2026, 4, 2))
        # Acme's invoices were committed; Globex has none and is left STARTED for the next run.
        assert Invoice.objects.filter(organization=world.acme).count() == 2
        assert not Invoice.objects.filter(organization=world.globex).exists()
        globex_account = BillingAccount.objects.get(organization=world.globex)
        assert globex_account.invoicing_status == "started" and globex_account.invoiced_through is None
        acme_invoices = sorted(Invoice.objects.filter(organization=world.acme).values_list("pk", "invoice_no"))

        report = run_billing(date=date(2026, 4, 2))

    assert report.invoices_created == 2 and report.accounts_skipped == 1
    assert sorted(Invoice.objects.filter(organization=world.acme).values_list("pk", "invoice_no")) == acme_invoices
    assert Invoice.objects.filter(organization=world.globex).count() == 2
    assert sorted(Invoice.objects.values_list("invoice_no", flat=True)) == [
        f"INV-2026-{n:06d}" for n in range(1, 5)]
    assert set(BillingAccount.objects.values_list("invoicing_status", flat=True)) == {"done"}


def _three_organizations_with_two_months_each(world, catalog) -> list:
    initech = factories.make_organization("Initech", timezone="Asia/Kolkata", currency="CNY")
    organizations = [(world.acme, world.research), (world.globex, world.sales),
                     (initech, factories.make_department(initech, "Lab"))]
    for organization, department in organizations:
        key, _ = factories.make_inference_key(department)
        ingest_events([factories.event(key, catalog["qwen"], timestamp=local(organization, 2026, month, 15).isoformat())
                       for month in (2, 3)])
    return [organization for organization, _ in organizations]


def _one_invoice_per_organization_and_period(organizations) -> None:
    periods = sorted(Invoice.objects.values_list("organization_id", "period_start"))
    assert periods == sorted((o.pk, date(2026, m, 1)) for o in organizations for m in (2, 3))
    # Gapless across organizations: a number taken by a run that lost the race is never left behind.
    assert sorted(Invoice.objects.values_list("invoice_no", flat=True)) == [f"INV-2026-{n:06d}" for n in range(1, 7)]
    assert DocumentSequence.objects.get(kind="INV", year=2026).last == 6


def test_invoice_numbers_are_gapless_across_organizations(world, catalog):
    organizations = _three_organizations_with_two_months_each(world, catalog)
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    _one_invoice_per_organization_and_period(organizations)
    # Numbers follow the order invoices were made: organization by organization, month by month.
    made = list(Invoice.objects.order_by("organization_id", "period_start").values_list("invoice_no", flat=True))
    assert made == sorted(made)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_in_threads_make_one_invoice_each(world, catalog):
    organizations = _three_organizations_with_two_months_each(world, catalog)
    start_together = threading.Barrier(2)
    reports, errors = [], []

    def nightly_run() -> None:
        try:
            start_together.wait()
            reports.append(run_billing(date=date(2026, 4, 2)))
        except Exception as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            connection.close()

    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        runs = [threading.Thread(target=nightly_run) for _ in range(2)]
        for run in runs:
            run.start()
        for run in runs:
            run.join(timeout=120)

    assert errors == []
    _one_invoice_per_organization_and_period(organizations)
    assert sum(report.invoices_created for report in reports) == 6


def _two_nightly_tasks_through_real_workers(tmp_path) -> None:
    from tests.celery_worker_helpers import broker_for_test, private_queue, running_worker

    broker, queue = broker_for_test(tmp_path), private_queue()
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]

    def finished() -> int:
        return sum(log.read_text().count(" succeeded in ") + log.read_text().count(" raised ") for log in logs)

    with running_worker(broker, queue, logs[0]), running_worker(broker, queue, logs[1]):
        deadline = time.monotonic() + 60
        # Both listening before the tasks go out, so that each takes one.
        while not all("ready." in log.read_text() for log in logs) and time.monotonic() < deadline:
            time.sleep(0.2)
        # A run names no date: the task bills as of today.
        broker.publish("billing.tasks.run_nightly_billing", queue=queue)
        broker.publish("billing.tasks.run_nightly_billing", queue=queue)
        deadline = time.monotonic() + 120
        while finished() < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
    output = "\n".join(log.read_text() for log in logs)
    assert [log.read_text().count(" succeeded in ") for log in logs] == [1, 1], output[-6000:]


def _two_nightly_tasks_in_threads() -> None:
    from billing.tasks import run_nightly_billing

    start_together, errors = threading.Barrier(2), []

    def nightly_task() -> None:
        try:
            start_together.wait()
            run_nightly_billing()
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    runs = [threading.Thread(target=nightly_task) for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join(timeout=120)
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_two_nightly_tasks_at_once_make_one_invoice_each(world, catalog, tmp_path, settings):
    """With a broker (CELERY_BROKER_URL: Redis in CI), two real worker processes take one nightly
    task each from it at the same moment; with none, two threads run the task at once. A worker is
    another process, so the clock is the real one: the usage is in the third and second months
    before this one, over on every clock whatever the hour of the test."""
    three_months_ago = Period.containing(datetime.now(UTC).date()).previous().previous().previous()
    months = [three_months_ago, three_months_ago.next()]
    organizations = [(world.acme, world.research), (world.globex, world.sales)]
    for organization, department in organizations:
        key, _ = factories.make_inference_key(department)
        ingest_events([factories.event(key, catalog["qwen"],
                                       timestamp=local(organization, m.start.year, m.start.month, 15).isoformat())
                       for m in months])

    if settings.CELERY_BROKER_URL:
        _two_nightly_tasks_through_real_workers(tmp_path)
    else:
        _two_nightly_tasks_in_threads()

    assert sorted(Invoice.objects.values_list("organization_id", "period_start")) == sorted(
        (organization.pk, month.start) for organization, _ in organizations for month in months)
    year_numbers = defaultdict(list)
    for number in Invoice.objects.values_list("invoice_no", flat=True):
        year_numbers[number[4:8]].append(int(number[9:]))
    for numbers in year_numbers.values():
        assert sorted(numbers) == list(range(1, len(numbers) + 1))


def test_the_plan_fee_is_a_whole_month_or_prorated_by_local_days(world, catalog):
    team = factories.make_plan("team", name="Team", monthly_fee=Decimal("999"))
    team_usd = factories.make_plan("team-usd", name="Team (USD)", currency="USD", monthly_fee=Decimal("149"))
    # Acme: on Team since January; Globex joined on 10 March (New York's clock) with no usage yet.
    subscribe(actor=SYSTEM, organization=world.acme, plan=team, started_at=local(world.acme, 2026, 1, 1))
    subscribe(actor=SYSTEM, organization=world.globex, plan=team_usd, started_at=local(world.globex, 2026, 3, 10, 9))
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))

    acme = list(Invoice.objects.filter(organization=world.acme).order_by("period_start"))
    assert [i.period_start for i in acme] == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]
    for invoice in acme:
        (fee,) = invoice.lines.all()
        assert (fee.kind, fee.quantity, fee.unit, fee.unit_price, fee.amount) == (
            "plan_fee", 1, "month", Decimal("999"), Decimal("999.00"))
        assert invoice.amount == Decimal("999.00")
    (globex,) = Invoice.objects.filter(organization=world.globex)
    (fee,) = globex.lines.all()
    # 10 to 31 March: 22 of 31 days.
    assert (fee.quantity, fee.unit, fee.amount) == (22, "day", round_display_amount(Decimal(149) * 22 / 31))
    assert fee.amount == Decimal("105.74") and "22 of 31 days" in fee.description
    assert_total_equals_its_parts(globex)


def test_a_plan_change_bills_each_plan_for_its_own_days(world, catalog):
    starter = factories.make_plan("starter", name="Starter", monthly_fee=Decimal("0"))
    team = factories.make_plan("team", name="Team", monthly_fee=Decimal("310"))
    subscribe(actor=SYSTEM, organization=world.acme, plan=starter, started_at=local(world.acme, 2026, 3, 1))
    subscribe(actor=SYSTEM, organization=world.acme, plan=team, started_at=local(world.acme, 2026, 3, 21, 15))
    assert Subscription.objects.get(plan=starter).status == "cancelled"
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    invoice = Invoice.objects.get(organization=world.acme)
    # 1-20 March on Starter, the day of the change and after on Team: 20 + 11 = 31 days, none twice.
    assert sorted(invoice.lines.values_list("quantity", "amount")) == [(11, Decimal("110.00")), (20, Decimal("0"))]


def test_a_plan_in_another_currency_fails_that_organization_alone(world, catalog):
    subscribe(actor=SYSTEM, organization=world.globex, plan=factories.make_plan("team", currency="CNY"),
              started_at=local(world.globex, 2026, 3, 1))
    subscribe(actor=SYSTEM, organization=world.acme, plan=factories.make_plan("team-2"),
              started_at=local(world.acme, 2026, 3, 1))
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        report = run_billing(date=date(2026, 4, 2))
    assert report.accounts_failed == 1
    (failed,) = [outcome for outcome in report.outcomes if outcome.action == "failed"]
    assert failed.organization_id == world.globex.pk and "priced in CNY, the account in USD" in failed.reason
    assert Invoice.objects.filter(organization=world.acme).count() == 1
    assert not Invoice.objects.filter(organization=world.globex).exists()


def test_an_account_with_a_grace_period_gets_a_draft_issued_later(world, catalog):
    BillingAccount.objects.filter(organization=world.acme).update(draft_grace_days=3)
    key, _ = factories.make_inference_key(world.research)
    ingest_events([factories.event(key, catalog["qwen"], timestamp="2026-03-10T10:00:00+08:00")])
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    draft = Invoice.objects.get(organization=world.acme)
    assert draft.status == "draft" and draft.invoice_no.startswith("DRAFT-") and draft.issued_at is None
    assert not world.acme.webhook_events.exists()
    amount = draft.amount

    with time_machine.travel(datetime(2026, 4, 4, 12, tzinfo=UTC), tick=False):
        assert run_billing(date=date(2026, 4, 4)).invoices_issued == 0
    with time_machine.travel(datetime(2026, 4, 5, 12, tzinfo=UTC), tick=False):
        report = run_billing(date=date(2026, 4, 5))
    draft.refresh_from_db()
    assert report.invoices_issued == 1
    assert (draft.status, draft.invoice_no, draft.amount) == ("issued", "INV-2026-000001", amount)
    assert draft.issued_at == datetime(2026, 4, 5, 12, tzinfo=UTC)
    assert world.acme.webhook_events.get().data["invoice_no"] == "INV-2026-000001"


def test_the_command_prints_what_it_did(month_of_usage, capsys):
    out = StringIO()
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        call_command("run_billing", "--date", "2026-04-02", stdout=out)
    assert "4 invoices made (0 as drafts), 4 issued" in out.getvalue()
    assert "Acme: invoiced INV-2026-000001, INV-2026-000002" in out.getvalue()
    assert "run_billing 2026-04-02: 100%" in capsys.readouterr().err  # the progress bar


def test_the_nightly_task_bills_as_of_today(month_of_usage):
    from billing.tasks import run_nightly_billing

    # 12:00 UTC: March has ended in Shanghai and in New York.
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        counts = run_nightly_billing.apply().get()
    assert counts["date"] == "2026-04-02" and counts["invoices_created"] == 4


@pytest.mark.django_db(transaction=True)  # the scheduler closes and reopens connections as beat does
def test_the_beat_schedule_names_the_invoice_and_budget_jobs_in_the_admin_table(settings):
    from django_celery_beat.models import PeriodicTask
    from django_celery_beat.schedulers import DatabaseScheduler

    from portal.celery import app

    app.loader.import_default_modules()  # the tasks modules, as a worker imports them at start

    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    DatabaseScheduler(app=app)  # beat starting: the settings' entries are synced into the table
    invoice = PeriodicTask.objects.get(name__contains="invoice")
    assert invoice.task == "billing.tasks.run_nightly_billing" and invoice.task in app.tasks
    assert (invoice.crontab.hour, invoice.crontab.minute) == ("2", "0")
    budget = PeriodicTask.objects.get(name__contains="budget")
    assert budget.task == "billing.tasks.run_budget_job"
    assert (budget.interval.every, budget.interval.period) == (300, "seconds")
    assert PeriodicTask.objects.get(name__contains="reconciliation").task in app.tasks
