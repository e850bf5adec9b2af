"""The nightly invoice job (API.md §10 "Invoices" and "Periods"): `run_billing(date=...)`.

Contract:
- A period is a calendar month in the organization's timezone, written as its first and last day.
  A run at `date` invoices every period that ended before `date` on the organization's clock
  (`period_end < date`) and has really ended there (a `--date` in the future never bills a month
  still running), has usage or falls at least partly within a subscription, and has no invoice
  yet. The nightly task (02:00 UTC) passes today's date on the platform's clock (UTC), so an
  organization west of UTC is invoiced the night after its month ends rather than during its
  last evening.
- Exactly one invoice per organization and period however often and however concurrently it
  runs: each period is invoiced in a transaction of its own that first locks the billing account
  (every other run waits there, then re-checks and finds the work done); the unique constraint
  on (organization, period, currency) backs the lock, and an IntegrityError from it counts as
  "another run made it".
- Crash-safe (Zulip's `invoicing_status`): a run marks the account STARTED in a transaction of
  its own before its periods; each period's transaction moves `invoiced_through` to that
  period's last day together with the invoice, and the last one marks the account DONE. A run
  killed between two periods or two organizations leaves nothing half-written; the next run
  resumes after `invoiced_through` and logs that it is finishing an interrupted run. An
  organization whose data cannot be invoiced honestly (InvoicingError) is reported as failed and
  left STARTED, and the run goes on with the others; any other exception stops the run.
- `invoiced_through` is also the watermark that makes a rerun with nothing to do cost two
  queries: periods up to it are never looked at again, so usage that arrives for a settled
  period is not invoiced (the reconciliation reports it for invoiced periods,
  billing.reconciliation).

Lines and totals:
- `plan_fee`: one per subscription covering part of the period, in the account currency (a plan
  priced in another currency is an error for that organization: nothing is converted). A
  subscription runs from its start to the earliest of its expiry and the start of the next one;
  it is billed for the local days from the day it starts up to, not including, the day it ends
  (a day of a plan change belongs to the new plan). A whole month is quantity 1 "month" at the
  monthly fee; part of a month is prorated by days: quantity = days, unit_price = fee ÷ days in
  the month, amount = fee × days ÷ days in the month, rounded once.
- `usage`: one per (model, department) with requests in the period, from the rollups through the
  query engine over the period's local-midnight bounds. `exact_amount` is the exact cost sum,
  `amount` = round_display_amount(exact_amount). The quantity is what the model is sold by:
  images for image models, video seconds for video models, tokens (prompt + completion) for the
  rest; unit_price is null (a line mixes input, output and cache prices, and price changes).
- `credit`: none, and `credits_applied` = 0. Prepaid top-ups and grants pay for usage as it is
  ingested: the charge draws them down in the ledger then, and the ledger keeps no record of
  which grant paid which event, so a "credits applied" figure here would be an invented split of
  money already accounted for. The invoice states what the period cost; the ledger what paid it.
- subtotal = plan fees + usage + adjustments; tax = round_display_amount(subtotal × tax rate);
  amount = subtotal + tax − credits_applied. Every line is rounded once, so the total equals its
  parts to the cent.

Issue: `invoice_no` from `billing.numbering.next_number("INV", year)` in the issuing transaction,
the year of issue on the platform's clock (settings.TIME_ZONE). An account with
`draft_grace_days` > 0 gets a draft numbered `DRAFT-<uuid>` (numbers are given only at issue, so
the INV sequence stays gapless); a later run issues each draft once `date` is `draft_grace_days`
after the day it was made. Issuing writes an audit row and the `invoice.issued` webhook event.
Both parties are snapshotted: the seller from settings (PLATFORM_*), the buyer from the billing
account, as `{"name", "address", "tax_id", "email"}`.
"""

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Min
from django.utils import timezone

from billing.models import BillingAccount, Invoice, InvoiceLine, Model, Subscription
from billing.money import ZERO, round_display_amount, round_event_amount
from billing.numbering import INVOICE, next_number
from billing.periods import Period
from billing.webhooks import emit_event
from portal.models import Organization
from portal.services import SYSTEM, Actor, record_audit
from usage.folding import fold_pending
from usage.models import UsageModelDaily
from usage.query import for_organization
from usage.selectors import objects_named_in

__all__ = ["AccountOutcome", "InvoicingError", "Period", "RunReport", "issue_draft_invoice", "run_billing",
           "usage_lines", "void_draft_invoice"]

logger = logging.getLogger(__name__)

DRAFT_PREFIX = "DRAFT-"
USAGE_SUMS = ("prompt_tokens", "completion_tokens", "image_count", "video_seconds", "cost_units")


class InvoicingError(Exception):
    """The organization's data does not allow an honest invoice (the run goes on with the others)."""


@dataclass
class AccountOutcome:
    organization_id: int
    organization: str
    action: str  # "invoiced", "skipped", "failed"
    reason: str = ""
    invoice_nos: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    date: date
    accounts: int = 0
    invoices_created: int = 0  # issued at once or as drafts
    invoices_issued: int = 0  # issued by this run, drafts of earlier runs included
    drafts_created: int = 0
    empty_periods: int = 0  # ended periods with neither usage nor a subscription: settled, no invoice
    already_invoiced: int = 0  # periods another run had invoiced by the time this one held the lock
    accounts_skipped: int = 0
    accounts_failed: int = 0
    outcomes: list[AccountOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int | str]:
        return {"date": self.date.isoformat(), "accounts": self.accounts, "invoices_created": self.invoices_created,
                "invoices_issued": self.invoices_issued, "drafts_created": self.drafts_created,
                "empty_periods": self.empty_periods, "already_invoiced": self.already_invoiced,
                "accounts_skipped": self.accounts_skipped, "accounts_failed": self.accounts_failed}


# --- the run ---------------------------------------------------------------------------------------

def run_billing(*, date: date, actor: Actor = SYSTEM, now: datetime | None = None,
                progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Invoice every ended period that needs it, then issue the drafts whose grace has passed.
    `progress(done, total)` is called after each account."""
    now = now or timezone.now()
    report = RunReport(date=date)
    accounts = list(BillingAccount.objects.select_related("organization").order_by("organization_id"))
    report.accounts = len(accounts)
    # Usage committed but not yet folded into the rollups is usage all the same: fold it, as the
    # first days of activity and the lines are read from the rollups.
    fold_pending(organization_ids=[account.organization_id for account in accounts], wait=True)
    first_activity = _first_activity_days([account for account in accounts if account.invoiced_through is None])
    for done, account in enumerate(accounts, start=1):
        outcome = _invoice_account(account, first_activity.get(account.organization_id), date=date, now=now,
                                   actor=actor, report=report)
        report.outcomes.append(outcome)
        if outcome.action == "skipped":
            report.accounts_skipped += 1
        elif outcome.action == "failed":
            report.accounts_failed += 1
        log = logger.error if outcome.action == "failed" else logger.info
        log("run_billing %s: org %s (%s) %s%s%s", date, outcome.organization_id, outcome.organization,
            outcome.action, f" {', '.join(outcome.invoice_nos)}" if outcome.invoice_nos else "",
            f": {outcome.reason}" if outcome.reason else "")
        if progress:
            progress(done, len(accounts))
    _issue_due_drafts(date=date, now=now, actor=actor, report=report)
    logger.info("run_billing %s: %s", date, report.counts())
    return report


def last_ended_period(organization: Organization, *, date: date, now: datetime) -> Period:
    """The last period that ended before `date` and has ended on the organization's clock."""
    today = now.astimezone(organization.zone).date()
    return Period.containing(min(date, today)).previous()


def _first_activity_days(accounts: list[BillingAccount]) -> dict[int, date]:
    """For accounts never invoiced: the first local day with usage or under a subscription, which is
    where their first period can be. Two grouped lookups for all of them."""
    if not accounts:
        return {}
    ids = [account.organization_id for account in accounts]
    zones = {account.organization_id: account.organization.zone for account in accounts}
    first: dict[int, date] = {}
    # The first day of stored usage (the per-model day level is the smallest one keyed by day).
    for organization_id, day in (UsageModelDaily.objects.filter(organization_id__in=ids)
                                 .values("organization_id").annotate(first=Min("day"))
                                 .values_list("organization_id", "first")):
        first[organization_id] = day
    for organization_id, started_at in (Subscription.objects.filter(organization_id__in=ids)
                                        .values("organization_id").annotate(first=Min("started_at"))
                                        .values_list("organization_id", "first")):
        day = started_at.astimezone(zones[organization_id]).date()
        first[organization_id] = min(day, first.get(organization_id, day))
    return first


def _pending_periods(account: BillingAccount, first_activity: date | None, last: Period) -> list[Period]:
    if account.invoiced_through is not None:
        period = Period.containing(account.invoiced_through).next()
    elif first_activity is not None:
        period = Period.containing(first_activity)
    else:
        return []
    periods = []
    while period <= last:
        periods.append(period)
        period = period.next()
    return periods


def _lock_account(account_id: int, now: datetime, **changes) -> BillingAccount:
    """Hold the account for the rest of the transaction and read it fresh. The write comes first
    because it locks on both databases: PostgreSQL's row lock (select_for_update then only re-reads),
    and SQLite's single write lock, which SQLite would refuse a transaction that had read first
    whenever another writer committed in between (SQLite ignores select_for_update).
    `invoicing_started_at` says when a run last worked on the account."""
    BillingAccount.objects.filter(pk=account_id).update(invoicing_started_at=now, **changes)
    return BillingAccount.objects.select_for_update().select_related("organization").get(pk=account_id)


def _invoice_account(account: BillingAccount, first_activity: date | None, *, date: date, now: datetime,
                     actor: Actor, report: RunReport) -> AccountOutcome:
    organization = account.organization
    outcome = AccountOutcome(organization.pk, organization.name, "skipped")
    last = last_ended_period(organization, date=date, now=now)
    if not _pending_periods(account, first_activity, last):
        outcome.reason = (f"invoiced through {account.invoiced_through}" if account.invoiced_through
                          else "no usage and no subscription yet")
        return outcome
    was = account.invoicing_status
    with transaction.atomic():
        # The claim, committed on its own: a run that dies after it leaves STARTED behind, and the
        # next run knows it is finishing an interrupted (or still running) one.
        account = _lock_account(account.pk, now, invoicing_status=BillingAccount.Invoicing.STARTED)
        periods = _pending_periods(account, first_activity, last)
    if was == BillingAccount.Invoicing.STARTED:
        logger.warning("run_billing: org %s was left STARTED by an interrupted or concurrent run; finishing it "
                       "after %s", organization.pk, account.invoiced_through)
    results: list[str] = []
    if not periods:  # another run settled every period between the first look and the claim
        BillingAccount.objects.filter(pk=account.pk).update(invoicing_status=BillingAccount.Invoicing.DONE)
    try:
        for period in periods:
            result, invoice = _invoice_period(account.pk, period, last=period == periods[-1], now=now, actor=actor)
            results.append(result)
            if invoice is not None:
                outcome.invoice_nos.append(invoice.invoice_no)
                report.invoices_created += 1
                if invoice.status == Invoice.Status.ISSUED:
                    report.invoices_issued += 1
                else:
                    report.drafts_created += 1
    except InvoicingError as error:
        outcome.action, outcome.reason = "failed", str(error)
        return outcome  # left STARTED: the next run tries again
    finally:
        report.empty_periods += results.count(EMPTY)
        report.already_invoiced += results.count(ALREADY_INVOICED)
    if outcome.invoice_nos:
        outcome.action = "invoiced"
    empty, already = results.count(EMPTY), results.count(ALREADY_INVOICED)
    if not results:
        outcome.reason = "invoiced by another run"
    elif empty or already:
        outcome.reason = ", ".join(part for part in (
            f"{empty} period(s) with neither usage nor a subscription" if empty else "",
            f"{already} period(s) invoiced by another run" if already else "") if part)
    return outcome


INVOICED, EMPTY, ALREADY_INVOICED = "invoiced", "empty", "already_invoiced"


def _invoice_period(account_id: int, period: Period, *, last: bool, now: datetime,
                    actor: Actor) -> tuple[str, Invoice | None]:
    """Invoice one period in its own transaction, which also moves `invoiced_through` past it and,
    for the account's `last` pending period, marks the account DONE. Returns what happened
    (INVOICED, EMPTY or ALREADY_INVOICED) and the invoice made, if any."""
    done = {"invoicing_status": BillingAccount.Invoicing.DONE} if last else {}
    try:
        with transaction.atomic():
            account = _lock_account(account_id, now)
            result, invoice = ALREADY_INVOICED, None
            settled = account.invoiced_through is not None and account.invoiced_through >= period.end
            if not settled and not _invoice_exists(account.organization_id, period):
                lines = [*plan_fee_lines(account, period), *usage_lines(account.organization, period)]
                result = INVOICED if lines else EMPTY
                if lines:
                    invoice = _create_invoice(account, period, lines, now=now, actor=actor)
            BillingAccount.objects.filter(pk=account_id).update(
                invoiced_through=max(period.end, account.invoiced_through or period.end), **done)
            return result, invoice
    except IntegrityError:
        # The unique constraint behind the lock: another run committed this period's invoice.
        organization_id = BillingAccount.objects.values_list("organization_id", flat=True).get(pk=account_id)
        if not _invoice_exists(organization_id, period):
            raise
        if done:
            BillingAccount.objects.filter(pk=account_id).update(**done)
        return ALREADY_INVOICED, None


def _invoice_exists(organization_id: int, period: Period) -> bool:
    return Invoice.objects.filter(organization_id=organization_id, period_start=period.start,
                                  period_end=period.end).exists()


# --- lines -----------------------------------------------------------------------------------------

def plan_fee_lines(account: BillingAccount, period: Period) -> list[InvoiceLine]:
    organization = account.organization
    zone = organization.zone
    subscriptions = list(Subscription.objects.filter(organization=organization).select_related("plan")
                         .order_by("started_at", "id"))
    lines = []
    for index, subscription in enumerate(subscriptions):
        ends = [moment for moment in (subscription.expires_at,
                                      subscriptions[index + 1].started_at if index + 1 < len(subscriptions) else None)
                if moment is not None]
        if not ends and subscription.status == Subscription.Status.CANCELLED:
            # Cancelled with no expiry and nothing after it: when it ended is unknown, and billing
            # it for ever would invent a fee.
            logger.warning("run_billing: subscription %s of org %s is cancelled with no end; not billed",
                           subscription.pk, organization.pk)
            continue
        first_day = max(period.start, subscription.started_at.astimezone(zone).date())
        after_last = period.end + timedelta(days=1)
        if ends:
            after_last = min(after_last, min(ends).astimezone(zone).date())
        days = (after_last - first_day).days
        if days <= 0:
            continue
        plan = subscription.plan
        if plan.currency != account.currency:
            raise InvoicingError(f"plan {plan.code} is priced in {plan.currency}, the account in {account.currency}")
        if days == period.days:
            quantity, unit, unit_price, amount = Decimal(1), "month", plan.monthly_fee, plan.monthly_fee
            description = f"{plan.name} plan, {period.start:%Y-%m}"
        else:
            quantity, unit = Decimal(days), "day"
            unit_price = round_event_amount(plan.monthly_fee / period.days)
            amount = plan.monthly_fee * days / period.days
            description = (f"{plan.name} plan, {first_day:%Y-%m-%d} to {after_last - timedelta(days=1):%Y-%m-%d} "
                           f"({days} of {period.days} days)")
        lines.append(InvoiceLine(kind=InvoiceLine.Kind.PLAN_FEE, description=description, quantity=quantity,
                                 unit=unit, unit_price=unit_price, exact_amount=round_event_amount(amount),
                                 amount=round_display_amount(amount)))
    return lines


def _quantity(model: Model, row) -> tuple[Decimal, str]:
    if model.modality == Model.Modality.IMAGE:
        return Decimal(row.image_count), "images"
    if model.modality == Model.Modality.VIDEO:
        return Decimal(row.video_seconds), "video seconds"
    return Decimal(row.total_tokens), "tokens"


def usage_lines(organization: Organization, period: Period) -> list[InvoiceLine]:
    """One line per (model, department) with requests in the period, from the query engine."""
    # Batches committed but not yet folded into the rollups would be left out of the invoice for
    # good (a settled period is never looked at again): fold them first.
    fold_pending(organization_ids=[organization.pk], wait=True)
    start, end = period.bounds(organization.zone)
    rows = [row for row in for_organization(organization).run(
        start, end, group_by=("model", "department"), sums=USAGE_SUMS, latency_range=False, fill_empty=False).rows
        if row.requests]
    named = objects_named_in(rows, "model", "department")
    lines = []
    for row in rows:
        model, department = named["model"][row.group["model"]], named["department"][row.group["department"]]
        quantity, unit = _quantity(model, row)
        lines.append(InvoiceLine(kind=InvoiceLine.Kind.USAGE, model=model, department=department,
                                 description=f"{model.name} ({model.code}), {department.name}",
                                 quantity=quantity, unit=unit, unit_price=None, exact_amount=row.cost,
                                 amount=round_display_amount(row.cost)))
    lines.sort(key=lambda line: (line.model.code, line.department.name, line.department_id))
    return lines


# --- the invoice -----------------------------------------------------------------------------------

def _parties(account: BillingAccount) -> tuple[dict[str, str], dict[str, str]]:
    seller = {"name": settings.PLATFORM_LEGAL_NAME, "address": settings.PLATFORM_ADDRESS,
              "tax_id": settings.PLATFORM_TAX_ID, "email": settings.PLATFORM_BILLING_EMAIL}
    buyer = {"name": account.legal_name or account.organization.name, "address": account.address,
             "tax_id": account.tax_id, "email": account.billing_email}
    return seller, buyer


def totals(lines: Iterable[InvoiceLine], tax_rate: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(subtotal, tax, credits_applied, amount) from rounded lines, as §10 defines them."""
    lines = list(lines)
    subtotal = sum((line.amount for line in lines if line.kind != InvoiceLine.Kind.CREDIT), ZERO)
    credits_applied = -sum((line.amount for line in lines if line.kind == InvoiceLine.Kind.CREDIT), ZERO)
    tax = round_display_amount(subtotal * tax_rate)
    return subtotal, tax, credits_applied, subtotal + tax - credits_applied


def _create_invoice(account: BillingAccount, period: Period, lines: list[InvoiceLine], *, now: datetime,
                    actor: Actor) -> Invoice:
    organization = account.organization
    subtotal, tax, credits_applied, amount = totals(lines, account.tax_rate)
    seller, buyer = _parties(account)
    draft = account.draft_grace_days > 0
    # Created as a draft and then issued: the lines of an issued invoice can never be written.
    invoice = Invoice.objects.create(
        organization=organization, invoice_no=f"{DRAFT_PREFIX}{uuid.uuid4().hex}" if draft else _number(now),
        period_start=period.start, period_end=period.end, currency=account.currency, subtotal=subtotal,
        tax_rate=account.tax_rate, tax=tax, credits_applied=credits_applied, amount=amount,
        status=Invoice.Status.DRAFT, seller=seller, buyer=buyer)
    for line in lines:
        line.invoice = invoice
    InvoiceLine.objects.bulk_create(lines)
    detail = {"period_start": period.start.isoformat(), "period_end": period.end.isoformat(),
              "amount": str(amount), "currency": account.currency, "lines": len(lines)}
    if draft:
        record_audit(actor=actor, organization=organization, action="invoice.create", target=invoice, detail=detail)
    else:
        _issue(invoice, now=now, actor=actor, detail=detail)
    return invoice


def _number(now: datetime) -> str:
    return next_number(INVOICE, timezone.localtime(now).year)


def _issue(invoice: Invoice, *, now: datetime, actor: Actor, detail: dict | None = None) -> None:
    """Number (if a draft), issue, audit and announce a draft invoice, inside the caller's transaction."""
    if invoice.invoice_no.startswith(DRAFT_PREFIX):
        invoice.invoice_no = _number(now)
    invoice.status, invoice.issued_at = Invoice.Status.ISSUED, now
    # A draft has nothing to protect yet: one UPDATE, without the model's read-back of an issued row.
    if not Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.DRAFT).update(
            invoice_no=invoice.invoice_no, status=invoice.status, issued_at=now):
        raise RuntimeError(f"invoice {invoice.pk} is no longer a draft")  # the callers hold the lock: a bug
    record_audit(actor=actor, organization=invoice.organization, action="invoice.issue", target=invoice,
                 detail={"invoice_no": invoice.invoice_no, **(detail or {})})
    emit_event(organization=invoice.organization, type="invoice.issued", data={
        "invoice_id": str(invoice.uuid), "invoice_no": invoice.invoice_no,
        "amount": str(round_display_amount(invoice.amount)),
        "currency": invoice.currency, "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat()})


@transaction.atomic
def issue_draft_invoice(*, actor: Actor, invoice: Invoice, now: datetime | None = None) -> Invoice:
    """An operator issues a draft before its grace days are over: numbered, audited and announced
    as the nightly run would, under the same account lock (so the two never both issue it)."""
    now = now or timezone.now()
    _lock_account(invoice.organization.billing_account.pk, now)
    locked = Invoice.objects.select_for_update().select_related("organization").get(pk=invoice.pk)
    if locked.status != Invoice.Status.DRAFT:
        raise InvoicingError(f"invoice {locked.invoice_no} is no longer a draft")
    _issue(locked, now=now, actor=actor)
    return locked


@transaction.atomic
def void_draft_invoice(*, actor: Actor, invoice: Invoice) -> Invoice:
    """An operator withdraws a draft that must not be sent. It never had a number (the INV
    sequence keeps no gap) and stays as the record that its period was handled: no run invoices
    that period again. Nothing was booked for it (usage is charged as it is ingested)."""
    if not Invoice.objects.filter(pk=invoice.pk, status=Invoice.Status.DRAFT).update(status=Invoice.Status.VOID):
        raise InvoicingError(f"invoice {invoice.invoice_no} is no longer a draft")
    invoice.status = Invoice.Status.VOID
    record_audit(actor=actor, organization=invoice.organization, action="invoice.void", target=invoice,
                 detail={"invoice_no": invoice.invoice_no})
    return invoice


def _issue_due_drafts(*, date: date, now: datetime, actor: Actor, report: RunReport) -> None:
    """Issue each draft once `date` is its account's grace days after the day it was made."""
    drafts = Invoice.objects.filter(status=Invoice.Status.DRAFT).select_related("organization__billing_account")
    for draft in drafts.order_by("organization_id", "period_start"):
        zone = draft.organization.zone
        grace = draft.organization.billing_account.draft_grace_days
        if draft.created_at.astimezone(zone).date() + timedelta(days=grace) > date:
            continue
        with transaction.atomic():
            _lock_account(draft.organization.billing_account.pk, now)
            invoice = Invoice.objects.select_for_update().select_related("organization").get(pk=draft.pk)
            if invoice.status != Invoice.Status.DRAFT:
                continue  # another run issued it
            _issue(invoice, now=now, actor=actor)
        report.invoices_issued += 1
        logger.info("run_billing %s: org %s draft issued as %s", date, invoice.organization_id, invoice.invoice_no)
