"""Reads for billing: the account's currency, the current plan, month-to-date cost, budgets, the
balance, credit grants and invoices. Catalog reads (prices) are in billing.catalog, a floor below
usage. The API and the portal pages both read through here, so they list the same rows in the
same order."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import QuerySet
from django.utils import timezone

from billing.models import (
    BillingAccount,
    Budget,
    CreditGrant,
    CreditNote,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Subscription,
)
from billing.money import ZERO
from billing.periods import Period
from portal.models import Organization
from usage.query import for_organization, total_cost_ever
from usage.timebuckets import local_midnight_of


def account_currency(organization: Organization) -> str:
    """The currency every amount of the organization is kept in."""
    return BillingAccount.objects.values_list("currency", flat=True).get(organization=organization)


def current_subscription(organization: Organization) -> Subscription | None:
    now = timezone.now()
    return (
        Subscription.objects.select_related("plan")
        .filter(organization=organization, status=Subscription.Status.ACTIVE, started_at__lte=now)
        .order_by("-started_at")
        .first()
    )


def period_cost(organization: Organization, period: Period, now: datetime, **filters) -> Decimal:
    """What the organization (or, with engine filters, its departments or keys) has spent in
    `period` up to the end of today: whole local days, so the day-level rollups answer."""
    zone = organization.zone
    start, end = period.bounds(zone)
    today_end = local_midnight_of(now.astimezone(zone).date() + timedelta(days=1), zone)
    return for_organization(organization).total(start, min(end, max(today_end, start + timedelta(days=1))),
                                                **filters).cost


def month_to_date_cost(organization: Organization, now: datetime | None = None) -> Decimal:
    """This calendar month's cost so far, in the account's currency (from the query engine)."""
    now = now or timezone.now()
    return period_cost(organization, Period.of(organization, now), now)


@dataclass(frozen=True)
class Balance:
    """The account's money, from the ledger itself (the sum the running balance is checked
    against), split the ways the dialects show it. Amounts are exact (8 places), in `currency`."""

    currency: str
    total_recharge: Decimal  # every credit in: top-ups, grants, credit notes, payments, adjustments
    total_used: Decimal  # usage and every other movement out (grant expiries, negative adjustments)
    top_ups: Decimal  # money paid in (top-up entries)
    grants_ever: Decimal  # credit granted by the platform, all grants ever (expired and used included)
    grant_remainder: Decimal  # what unexpired grants still hold
    usage: Decimal  # usage charges alone
    credit_limit: Decimal
    status: str

    @property
    def balance(self) -> Decimal:
        return self.total_recharge - self.total_used

    @property
    def can_consume(self) -> bool:
        """Money left to spend: an active account whose balance and credit limit are above zero."""
        return self.status == BillingAccount.Status.ACTIVE and self.balance + self.credit_limit > ZERO


def account_balance(organization: Organization, now: datetime | None = None) -> Balance:
    """Credits in (top-ups, grants, credit notes, payments, adjustments) and usage out, from the
    ledger itself: the sum the running balance is checked against."""
    now = now or timezone.now()
    account = BillingAccount.objects.get(organization=organization)
    # Summed in Python, exactly (SQLite would sum decimals as floats); an account has few entries.
    entries = list(LedgerEntry.objects.filter(organization=organization, currency=account.currency)
                   .values_list("kind", "amount"))
    recharge = sum((amount for _, amount in entries if amount > 0), ZERO)
    other = sum((amount for _, amount in entries if amount < 0), ZERO)
    top_ups = sum((amount for kind, amount in entries if kind == LedgerEntry.Kind.TOP_UP), ZERO)
    grants = list(CreditGrant.objects.filter(organization=organization, currency=account.currency,
                                             kind=CreditGrant.Kind.GRANT)
                  .values_list("amount", "remaining", "status", "expires_at"))
    unexpired = sum((remaining for _, remaining, status, expires_at in grants
                     if status == CreditGrant.Status.ACTIVE and (expires_at is None or expires_at > now)), ZERO)
    usage = total_cost_ever(organization)
    return Balance(currency=account.currency, total_recharge=recharge, total_used=usage - other, top_ups=top_ups,
                   grants_ever=sum((amount for amount, *_ in grants), ZERO), grant_remainder=unexpired, usage=usage,
                   credit_limit=account.credit_limit, status=account.status)


def credit_grants(organization: Organization) -> QuerySet[CreditGrant]:
    """The organization's credit grants, newest first."""
    return CreditGrant.objects.filter(organization=organization).order_by("-created_at", "-id")


def invoices_of(organization: Organization, *, status: str | None = None) -> QuerySet[Invoice]:
    """The organization's invoices, newest period first (optionally of one status)."""
    invoices = Invoice.objects.filter(organization=organization).order_by("-period_start", "-id")
    return invoices if status is None else invoices.filter(status=status)


def invoice_lines(invoice: Invoice) -> QuerySet[InvoiceLine]:
    return invoice.lines.select_related("model", "department").order_by("id")


def invoice_credit_notes(invoice: Invoice) -> QuerySet[CreditNote]:
    return invoice.credit_notes.select_related("invoice").order_by("id")


def budgets_of(organization: Organization) -> QuerySet[Budget]:
    """The organization's budgets, oldest first, with what their state and targets need."""
    return (Budget.objects.filter(organization=organization)
            .select_related("organization", "department", "key").order_by("created_at", "id"))
