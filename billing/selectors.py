"""Reads for the catalog and billing: price lookup, current plan."""

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from billing.models import BillingAccount, CreditGrant, Model, Price, Subscription
from billing.money import ZERO
from portal.models import Organization
from usage.query import for_organization, total_cost_ever
from usage.timebuckets import local_midnight_of


def price_at(model: Model, currency: str, when: datetime) -> Price | None:
    """The price of `model` in `currency` in force at `when`, or None if none was yet."""
    return (
        Price.objects.filter(model=model, currency=currency, effective_from__lte=when)
        .order_by("-effective_from")
        .first()
    )


def model_by_code(code: str) -> Model | None:
    return Model.objects.filter(code=code).first()


class PriceBook:
    """Every price row of some models in one currency, held in memory for rating a batch.

    One query per batch instead of one per event; lookups by bisection on effective_from.
    """

    def __init__(self, model_ids: Iterable[int], currency: str) -> None:
        self.currency = currency
        self._history: dict[int, tuple[list[datetime], list[Price]]] = {}
        rows = Price.objects.filter(model_id__in=set(model_ids), currency=currency).order_by(
            "model_id", "effective_from"
        )
        for price in rows:
            starts, prices = self._history.setdefault(price.model_id, ([], []))
            starts.append(price.effective_from)
            prices.append(price)

    def at(self, model_id: int, when: datetime) -> Price | None:
        starts, prices = self._history.get(model_id, ((), ()))
        index = bisect.bisect_right(starts, when) - 1
        return prices[index] if index >= 0 else None


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


def month_start(organization: Organization, now: datetime | None = None) -> datetime:
    """The start of the current calendar month in the organization's timezone."""
    local = (now or timezone.now()).astimezone(organization.zone)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_to_date_cost(organization: Organization, now: datetime | None = None) -> Decimal:
    """This calendar month's cost so far, in the account's currency (from the query engine)."""
    now = now or timezone.now()
    # Up to the end of today (local): whole days, so the per-day rollup answers it.
    tomorrow = local_midnight_of(now.astimezone(organization.zone).date() + timedelta(days=1), organization.zone)
    return for_organization(organization).total(month_start(organization, now), tomorrow).cost


def budget_exhausted(organization: Organization) -> bool:
    account = BillingAccount.objects.filter(organization=organization).only("monthly_budget").first()
    if account is None or account.monthly_budget is None:
        return False
    return month_to_date_cost(organization) >= account.monthly_budget


@dataclass(frozen=True)
class Balance:
    currency: str
    total_recharge: Decimal
    total_used: Decimal

    @property
    def balance(self) -> Decimal:
        return self.total_recharge - self.total_used


def account_balance(organization: Organization) -> Balance:
    """Credits granted minus everything ever used, in the account's currency."""
    account = BillingAccount.objects.get(organization=organization)
    recharge = CreditGrant.objects.filter(organization=organization, currency=account.currency).aggregate(
        total=Sum("amount"))["total"] or ZERO
    return Balance(account.currency, recharge, total_cost_ever(organization))
