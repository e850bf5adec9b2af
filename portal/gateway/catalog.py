"""What the gateway knows between database reads: the routing table (model → upstream, with
the model's current prices) and, per inference key, the facts its checks need (department,
plan, discount, currency, hard budgets).

Everything here is read with plain, synchronous Django code, run by the gateway in its own
threads (portal.gateway.runtime), never on the event loop. The gateway keeps the answers in the
process: the routing table for ROUTES_SECONDS, a key's facts for KEY_FACTS_SECONDS. A key's
status is not among them (keys.services' verify memo decides that, within a second); a new
upstream, price, plan or budget reaches the gateway within these few seconds.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from billing.budgets import budget_state
from billing.catalog import PriceBook
from billing.models import BillingAccount, Budget, Model, Price
from billing.money import to_units
from billing.periods import Period
from billing.rating import Rates
from billing.selectors import current_subscription
from keys.encryption import UPSTREAM_KEYS, key_ring
from keys.models import InferenceKey, Upstream

ROUTES_SECONDS = 2.0
KEY_FACTS_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Route:
    """Where a model's calls go, and what the gateway needs to know of the model."""

    model_code: str
    model_id: int
    created: int  # Unix seconds, for /v1/models
    owned_by: str
    max_output_tokens: int
    base_url: str
    api_key: str  # the upstream's, decrypted; never logged, never sent anywhere but that upstream
    timeout_seconds: float
    max_retries: int
    prices: dict[str, Price]  # in force now, by currency


@dataclass(frozen=True, slots=True)
class Routes:
    by_model: dict[str, Route]


def load_routes(now: datetime | None = None) -> Routes:
    """Every enabled catalog model that an upstream serves, with its prices in force now."""
    now = now or timezone.now()
    upstream_of: dict[str, Upstream] = {}
    for upstream in Upstream.objects.order_by("created_at", "pk"):
        for code in upstream.model_codes:
            upstream_of.setdefault(code, upstream)
    models = list(Model.objects.filter(code__in=list(upstream_of), enabled=True))
    books = {currency: PriceBook((model.pk for model in models), currency)
             for currency in BillingAccount.objects.values_list("currency", flat=True).distinct()}
    ring = key_ring(UPSTREAM_KEYS)
    keys: dict[int, str] = {}
    routes = {}
    for model in models:
        upstream = upstream_of[model.code]
        if upstream.pk not in keys:
            keys[upstream.pk] = ring.decrypt(upstream.api_key_encrypted.encode()).decode()
        prices = {currency: price for currency, book in books.items()
                  if (price := book.at(model.pk, now)) is not None}
        routes[model.code] = Route(
            model_code=model.code, model_id=model.pk, created=int(model.created_at.timestamp()),
            owned_by=model.provider or "system",
            max_output_tokens=model.max_output_tokens or settings.GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS,
            base_url=upstream.base_url, api_key=keys[upstream.pk], timeout_seconds=float(upstream.timeout_seconds),
            max_retries=upstream.max_retries, prices=prices)
    return Routes(routes)


@dataclass(frozen=True, slots=True)
class HardBudget:
    """A hard budget over a key, as the reservation counter names it: one counter per period."""

    budget_id: int
    counter: str  # the shared store's key for this budget's period
    amount_units: int  # the amount, in 1e-8 currency units (billing.money.to_units)
    expires_at: datetime  # the end of the period: the counter is not needed after it


@dataclass(frozen=True, slots=True)
class KeyFacts:
    key_id: int
    key_uuid: UUID
    organization_id: int
    department_id: int
    department_models: tuple[str, ...]
    department_rpm: int | None
    department_tpm: int | None
    plan_models: tuple[str, ...] | None  # None: no active plan
    plan_rpm: int | None
    plan_tpm: int | None
    currency: str | None
    discount: Decimal
    hard_budgets: tuple[HardBudget, ...]

    def rates(self, route: Route) -> Rates | None:
        """The model's current price with this key's discount, or None when there is none in
        the account's currency (then the call cannot be rated, and is refused)."""
        price = route.prices.get(self.currency or "")
        return Rates(price, self.discount) if price is not None else None


def load_key_facts(key_uuid: str, now: datetime | None = None) -> KeyFacts | None:
    now = now or timezone.now()
    key = (InferenceKey.objects.select_related("department", "organization").filter(uuid=key_uuid).first())
    if key is None:
        return None
    subscription = current_subscription(key.organization)
    plan = subscription.plan if subscription else None
    currency = BillingAccount.objects.filter(organization_id=key.organization_id).values_list(
        "currency", flat=True).first()
    period = Period.of(key.organization, now)
    period_end = period.bounds(key.organization.zone)[1]
    budgets = Budget.objects.filter(
        Q(scope=Budget.Scope.ORGANIZATION) | Q(scope=Budget.Scope.DEPARTMENT, department_id=key.department_id)
        | Q(scope=Budget.Scope.KEY, key_id=key.pk),
        organization_id=key.organization_id, hard_limit=True).order_by("pk")
    hard = tuple(HardBudget(budget.pk, f"gw:budget:{budget.pk}:{period.start.isoformat()}", to_units(budget.amount),
                            period_end.astimezone(UTC)) for budget in budgets)
    return KeyFacts(
        key_id=key.pk, key_uuid=key.uuid, organization_id=key.organization_id, department_id=key.department_id,
        department_models=tuple(key.department.allowed_models or ()),
        department_rpm=key.department.rpm_limit, department_tpm=key.department.tpm_limit,
        plan_models=tuple(plan.models_allowed or ()) if plan else None,
        plan_rpm=plan.rpm_limit if plan else None, plan_tpm=plan.tpm_limit if plan else None,
        currency=currency, discount=key.department.discount, hard_budgets=hard)


def budget_spent_units(budget_id: int, now: datetime | None = None) -> int:
    """What a budget's target has spent this period, as the database knows it: where a
    reservation counter starts when the shared store has none."""
    budget = Budget.objects.select_related("organization").get(pk=budget_id)
    return to_units(budget_state(budget, now).spent)
