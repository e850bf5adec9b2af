"""Writes for the catalog and billing: models, prices (append-only), plans, subscriptions,
billing accounts."""

import logging
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.budgets import enforce_hard_limits
from billing.ledger import append_entry, charge_usage
from billing.models import BillingAccount, CreditGrant, Model, Plan, Price, Subscription
from billing.money import ZERO
from portal.models import Organization
from portal.services import Actor, record_audit
from usage.services import IngestResult, ingest_events

logger = logging.getLogger(__name__)


@transaction.atomic
def add_price(
    *,
    model: Model,
    currency: str,
    effective_from: datetime,
    input_per_mtok: Decimal = ZERO,
    cached_input_per_mtok: Decimal = ZERO,
    output_per_mtok: Decimal = ZERO,
    cache_write_per_mtok: Decimal | None = None,
    per_image: Decimal = ZERO,
    per_video_second: Decimal = ZERO,
) -> Price:
    """Append a price; an existing row for the same instant is left as it is (idempotent)."""
    price, _created = Price.objects.get_or_create(
        model=model,
        currency=currency,
        effective_from=effective_from,
        defaults={
            "input_per_mtok": input_per_mtok,
            "cached_input_per_mtok": cached_input_per_mtok,
            "cache_write_per_mtok": cache_write_per_mtok,
            "output_per_mtok": output_per_mtok,
            "per_image": per_image,
            "per_video_second": per_video_second,
        },
    )
    return price


@transaction.atomic
def subscribe(
    *, actor: Actor, organization: Organization, plan: Plan, started_at: datetime | None = None,
    expires_at: datetime | None = None,
) -> Subscription:
    """Move an organization onto `plan`, ending whatever subscription was active."""
    started_at = started_at or timezone.now()
    Subscription.objects.select_for_update().filter(
        organization=organization, status=Subscription.Status.ACTIVE
    ).update(status=Subscription.Status.CANCELLED)
    subscription = Subscription.objects.create(
        organization=organization, plan=plan, started_at=started_at, expires_at=expires_at
    )
    record_audit(
        actor=actor, organization=organization, action="subscription.create", target=subscription,
        detail={"plan": plan.code},
    )
    return subscription


@transaction.atomic
def open_billing_account(
    *, actor: Actor, organization: Organization, currency: str, credit_limit: Decimal = ZERO,
    monthly_budget: Decimal | None = None, billing_email: str = "", tax_id: str = "",
) -> BillingAccount:
    account, created = BillingAccount.objects.get_or_create(
        organization=organization,
        defaults={
            "currency": currency,
            "credit_limit": credit_limit,
            "monthly_budget": monthly_budget,
            "billing_email": billing_email,
            "tax_id": tax_id,
        },
    )
    if created:
        record_audit(actor=actor, organization=organization, action="billing_account.open", target=account)
    return account


def expire_subscriptions(*, now: datetime | None = None) -> int:
    """Mark active subscriptions whose `expires_at` has passed as expired. Rerunning is a no-op."""
    now = now or timezone.now()
    expired = Subscription.objects.filter(
        status=Subscription.Status.ACTIVE, expires_at__isnull=False, expires_at__lte=now
    ).update(status=Subscription.Status.EXPIRED)
    logger.info("expire_subscriptions: %d subscription(s) expired as of %s", expired, now.isoformat())
    return expired


@transaction.atomic
def grant_credit(*, actor: Actor, organization: Organization, amount: Decimal, kind: str = CreditGrant.Kind.GRANT,
                 note: str = "", at: datetime | None = None, priority: int = 10,
                 expires_at: datetime | None = None) -> CreditGrant:
    """Add credit to an organization's account, in the account's currency: the grant and its
    `top_up`/`grant` ledger entry, together."""
    if amount <= 0:
        raise ValueError("a credit must be positive")
    if priority < 0:
        raise ValueError("priority must be 0 or more")
    at = at or timezone.now()
    if expires_at is not None and expires_at <= at:
        raise ValueError("a grant must expire after it is made")
    account = BillingAccount.objects.get(organization=organization)
    grant = CreditGrant.objects.create(organization=organization, kind=kind, amount=amount, remaining=amount,
                                       currency=account.currency, priority=priority, expires_at=expires_at,
                                       note=note, created_at=at)
    append_entry(organization=organization, kind=kind, amount=amount, at=at, grant=grant,
                 note=note or grant.get_kind_display())
    record_audit(actor=actor, organization=organization, action="credit.grant", target=grant,
                 detail={"amount": str(amount), "currency": account.currency, "kind": kind, "priority": priority,
                         "expires_at": expires_at.isoformat() if expires_at else None})
    return grant


@transaction.atomic
def record_usage(events: Sequence[Any]) -> IngestResult:
    """Ingest a batch of usage events and charge them, in one transaction: the events and their
    rollups (usage), the running balances and the grants they draw (the ledger), and any hard
    budget the batch takes to its amount (so the keys under it stop when this commits).

    Everything that reports usage goes through here: the gateway's ingestion endpoint, the demo."""
    result = ingest_events(events)
    if result.charges:
        charge_usage(result.charges)
        enforce_hard_limits(result.charges)
    return result
