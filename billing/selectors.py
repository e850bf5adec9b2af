"""Reads for billing: the account's currency, the current plan, month-to-date cost, budgets, the
balance. Catalog reads (prices) are in billing.catalog, a floor below usage."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from billing.models import BillingAccount, LedgerEntry, Subscription
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
    currency: str
    total_recharge: Decimal
    total_used: Decimal

    @property
    def balance(self) -> Decimal:
        return self.total_recharge - self.total_used


def account_balance(organization: Organization) -> Balance:
    """Credits in (top-ups, grants, credit notes, payments, adjustments) and usage out, from the
    ledger itself: the sum the running balance is checked against."""
    account = BillingAccount.objects.get(organization=organization)
    # Summed in Python, exactly (SQLite would sum decimals as floats); an account has few entries.
    amounts = list(LedgerEntry.objects.filter(organization=organization, currency=account.currency)
                   .values_list("amount", flat=True))
    recharge = sum((amount for amount in amounts if amount > 0), ZERO)
    other = sum((amount for amount in amounts if amount < 0), ZERO)
    return Balance(account.currency, recharge, total_cost_ever(organization) - other)
