"""The nightly reconciliation (API.md §10, issue 11 part 5): two checks that report every
difference and never fix one.

(a) Balances: for every billing account, the running `balance` kept beside each movement must
    equal the sum of its ledger entries minus the cost of all its usage events.
(b) Invoices: for every issued (or paid) invoice, the `exact_amount` of its usage lines per
    (model, department) must equal the cost of the period's events read from the RAW events (the
    query engine forced to its raw level): an independent path from the rollups the invoice was
    built from. Events that arrived after their period was invoiced show up here.

(a) reads under the account's row lock, so a batch being ingested is either wholly in what it
reads or wholly out of it (the batch's charge waits for the lock). Differences come back in a
`ReconciliationReport` and are logged at ERROR.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal

from django.db import transaction

from billing.models import BillingAccount, Invoice, InvoiceLine, LedgerEntry
from billing.money import ZERO
from billing.periods import Period
from portal.models import Organization
from usage.query import RAW, UsageQuery, run

__all__ = ["BalanceDifference", "InvoiceDifference", "ReconciliationReport", "reconcile"]

logger = logging.getLogger(__name__)

BEGINNING, END_OF_TIME = datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class BalanceDifference:
    organization_id: int
    organization: str
    currency: str
    balance: Decimal  # the running total as stored
    entries: Decimal  # the sum of the ledger entries
    usage: Decimal  # the cost of every usage event
    expected: Decimal  # entries − usage

    @property
    def difference(self) -> Decimal:
        return self.balance - self.expected


@dataclass(frozen=True)
class InvoiceDifference:
    invoice_id: int
    invoice_no: str
    organization_id: int
    model_id: int
    department_id: int
    invoiced: Decimal  # the usage lines' exact amounts
    events: Decimal  # the raw events' costs

    @property
    def difference(self) -> Decimal:
        return self.invoiced - self.events


@dataclass
class ReconciliationReport:
    accounts_checked: int = 0
    invoices_checked: int = 0
    balance_differences: list[BalanceDifference] = field(default_factory=list)
    invoice_differences: list[InvoiceDifference] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.balance_differences and not self.invoice_differences

    def counts(self) -> dict[str, int]:
        return {"accounts_checked": self.accounts_checked, "invoices_checked": self.invoices_checked,
                "balance_differences": len(self.balance_differences),
                "invoice_differences": len(self.invoice_differences)}


def reconcile(*, invoices_since: date | None = None) -> ReconciliationReport:
    """Run both checks over every account and every issued invoice (those whose period ends on or
    after `invoices_since`, when given)."""
    report = ReconciliationReport()
    for account_id in BillingAccount.objects.order_by("organization_id").values_list("pk", flat=True):
        difference = check_balance(account_id)
        report.accounts_checked += 1
        if difference is not None:
            report.balance_differences.append(difference)
            logger.error("reconciliation: org %s (%s) balance %s %s, but entries %s − usage %s = %s (off by %s)",
                         difference.organization_id, difference.organization, difference.balance,
                         difference.currency, difference.entries, difference.usage, difference.expected,
                         difference.difference)
    invoices = Invoice.objects.filter(status__in=(Invoice.Status.ISSUED, Invoice.Status.PAID))
    if invoices_since is not None:
        invoices = invoices.filter(period_end__gte=invoices_since)
    for invoice_id in invoices.order_by("organization_id", "period_start").values_list("pk", flat=True):
        differences = check_invoice(invoice_id)
        report.invoices_checked += 1
        report.invoice_differences.extend(differences)
        for difference in differences:
            logger.error("reconciliation: invoice %s (org %s) model %s department %s invoiced %s, events %s "
                         "(off by %s)", difference.invoice_no, difference.organization_id, difference.model_id,
                         difference.department_id, difference.invoiced, difference.events, difference.difference)
    logger.info("reconciliation: %s", report.counts())
    return report


def _raw_costs(organization: Organization, start: datetime, end: datetime,
               group_by: tuple[str, ...] = ()) -> dict[tuple, Decimal]:
    query = UsageQuery(organization_id=organization.pk, start=start, end=end, timezone=organization.timezone,
                       group_by=group_by, sums=("cost_units",), latency_range=False, fill_empty=False)
    rows = run(query, org_timezone=organization.timezone, level=RAW).rows
    return {tuple(row.group[name] for name in group_by): row.cost for row in rows}


def check_balance(account_id: int) -> BalanceDifference | None:
    with transaction.atomic():
        account = BillingAccount.objects.select_for_update().select_related("organization").get(pk=account_id)
        organization = account.organization
        # Entries are few (money in, expiries, notes): added here, exactly, on every database.
        entries = sum(LedgerEntry.objects.filter(organization=organization).values_list("amount", flat=True), ZERO)
        usage = _raw_costs(organization, BEGINNING, END_OF_TIME).get((), ZERO)
    expected = entries - usage
    if account.balance == expected:
        return None
    return BalanceDifference(organization.pk, organization.name, account.currency, account.balance, entries, usage,
                             expected)


def check_invoice(invoice_id: int) -> list[InvoiceDifference]:
    invoice = Invoice.objects.select_related("organization").get(pk=invoice_id)
    invoiced: dict[tuple, Decimal] = defaultdict(lambda: ZERO)
    for model_id, department_id, exact_amount in invoice.lines.filter(kind=InvoiceLine.Kind.USAGE).values_list(
            "model_id", "department_id", "exact_amount"):
        invoiced[(model_id, department_id)] += exact_amount
    start, end = Period(invoice.period_start, invoice.period_end).bounds(invoice.organization.zone)
    events = _raw_costs(invoice.organization, start, end, group_by=("model", "department"))
    return [InvoiceDifference(invoice.pk, invoice.invoice_no, invoice.organization_id, key[0], key[1],
                              invoiced.get(key, ZERO), events.get(key, ZERO))
            for key in sorted(set(invoiced) | set(events))
            if invoiced.get(key, ZERO) != events.get(key, ZERO)]
