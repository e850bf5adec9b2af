"""Budgets (API.md §10): monthly spending limits over an organization, a department or a key.

A period is a calendar month in the organization's timezone. Spending is read through the query
engine (the rollups), so a budget costs one small query however much usage there is.

Two paths act on budgets:
- `enforce_hard_limits`, inside the ingestion transaction: a hard budget that the batch takes to
  its amount is marked exhausted for the period in that same transaction, so the keys under it
  answer `budget_exhausted: true` from the moment the batch commits (their cached verify answers
  are dropped on commit). The rollups are folded after commits (usage/folding.py), so before a
  hard budget's spending is read its organization's queued batches, this one's included, are
  folded first (`_count_every_committed_event`).
- `run_budget_job` (Celery beat, every 5 minutes; `manage.py run_budgets`): threshold alerts,
  once per threshold and period (a unique row per alert decides it, however many jobs run),
  as a `budget.threshold` webhook event and an email; the hard limits again (for usage that
  arrived by any other path); the flip back at the start of a new period; grant expiry.

The overshoot of a hard limit is bounded by what is accepted before the crossing batch commits:
the crossing batch itself, plus the batches of other writers whose transactions were already
under way (each ≤ 1000 events); bench/billing_overshoot.py measures it.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing.ledger import expire_grants
from billing.models import BillingAccount, Budget, BudgetAlert, Webhook
from billing.money import ZERO, decimal_string, round_display_amount
from billing.periods import Period
from billing.selectors import month_to_date_cost, period_cost
from billing.webhooks import emit_event
from keys.models import InferenceKey
from keys.selectors import key_in
from keys.services import forget_verification
from portal.models import Department, Organization
from portal.selectors import department_in
from portal.services import Actor, record_audit
from usage.folding import fold_pending

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (50, 80, 100)


@dataclass(frozen=True)
class BudgetState:
    budget: Budget
    period: Period
    spent: Decimal

    @property
    def progress_pct(self) -> Decimal:
        return round_display_amount(Decimal(100) * self.spent / self.budget.amount)

    def reached(self, percent: int) -> bool:
        """Whether spending has reached `percent` of the amount, exactly (not the rounded figure)."""
        return self.spent * 100 >= self.budget.amount * percent

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.budget.amount or self.budget.exhausted_period == self.period.start

    @property
    def status(self) -> str:
        if self.exhausted:
            return "exhausted"
        thresholds = [t for t in self.budget.thresholds if t < 100]
        return "warning" if thresholds and self.reached(min(thresholds)) else "ok"


def spent_in(budget: Budget, period: Period, now: datetime) -> Decimal:
    """The budget's target's cost in the period so far."""
    filters: dict = {}
    if budget.scope == Budget.Scope.DEPARTMENT:
        filters["departments"] = (budget.department_id,)
    elif budget.scope == Budget.Scope.KEY:
        filters["keys"] = (budget.key_id,)
    return period_cost(budget.organization, period, now, **filters)


def budget_state(budget: Budget, now: datetime | None = None) -> BudgetState:
    now = now or timezone.now()
    period = Period.of(budget.organization, now)
    return BudgetState(budget, period, spent_in(budget, period, now))


# --- targets -------------------------------------------------------------------------------------

class UnknownBudgetTarget(ValueError):
    """The department or key a budget names is not the organization's (or no longer exists)."""


def budget_target(organization: Organization, scope: str, target_id: UUID | None,
                  ) -> tuple[Department | None, InferenceKey | None]:
    """The department or key (by uuid) a budget of `scope` is set on, found only within
    `organization`; (None, None) for an organization budget."""
    department = key = None
    if scope == Budget.Scope.DEPARTMENT:
        department = department_in(organization, uuid=target_id)
    elif scope == Budget.Scope.KEY:
        key = key_in(organization, uuid=target_id, deleted_at__isnull=True)
    if scope != Budget.Scope.ORGANIZATION and department is None and key is None:
        raise UnknownBudgetTarget(f"unknown {scope}")
    return department, key


def budget_targets(organization: Organization) -> tuple[list[Department], list[InferenceKey]]:
    """What a budget may be set on, besides the whole organization: its departments and live keys."""
    departments = list(Department.objects.filter(organization=organization).order_by("name", "id"))
    keys = list(InferenceKey.objects.filter(organization=organization, deleted_at__isnull=True)
                .select_related("department").order_by("name", "id"))
    return departments, keys


# --- writes --------------------------------------------------------------------------------------

def _validated_thresholds(thresholds: Iterable[int] | None) -> list[int]:
    values = list(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    if not values:
        raise ValueError("give at least one threshold")
    if any(isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100 for v in values):
        raise ValueError("thresholds are whole percents from 1 to 100")
    if values != sorted(set(values)):
        raise ValueError("thresholds must be ascending and distinct")
    return values


@transaction.atomic
def create_budget(*, actor: Actor, organization: Organization, scope: str, amount: Decimal,
                  department: Department | None = None, key: InferenceKey | None = None,
                  thresholds: Iterable[int] | None = None, hard_limit: bool = False) -> Budget:
    if amount <= ZERO:
        raise ValueError("a budget must be positive")
    account = BillingAccount.objects.get(organization=organization)
    budget = Budget.objects.create(organization=organization, scope=scope, department=department, key=key,
                                   amount=amount, currency=account.currency,
                                   thresholds=_validated_thresholds(thresholds), hard_limit=hard_limit)
    record_audit(actor=actor, organization=organization, action="budget.create", target=budget,
                 detail={"scope": scope, "amount": str(amount), "hard_limit": hard_limit})
    _enforce(budget, timezone.now())
    return budget


@transaction.atomic
def update_budget(*, actor: Actor, budget: Budget, amount: Decimal | None = None,
                  thresholds: Iterable[int] | None = None, hard_limit: bool | None = None) -> Budget:
    budget = Budget.objects.select_for_update().select_related("organization").get(pk=budget.pk)
    if budget.hard_limit or hard_limit:
        _count_every_committed_event([budget.organization_id])  # whether it reopens reads spending
    changes: dict = {}
    if amount is not None:
        if amount <= ZERO:
            raise ValueError("a budget must be positive")
        changes["amount"] = str(amount)
        budget.amount = amount
    if thresholds is not None:
        budget.thresholds = _validated_thresholds(thresholds)
        changes["thresholds"] = budget.thresholds
    if hard_limit is not None:
        budget.hard_limit = hard_limit
        changes["hard_limit"] = hard_limit
    # Raised above what is spent, or no longer hard: the keys under it verify normally again.
    if budget.exhausted_period is not None:
        state = budget_state(budget)
        if not budget.hard_limit or state.spent < budget.amount:
            budget.exhausted_period = None
            _forget_keys_under(budget)
    budget.save()
    record_audit(actor=actor, organization=budget.organization, action="budget.update", target=budget,
                 detail=changes)
    _enforce(budget, timezone.now())
    return budget


@transaction.atomic
def delete_budget(*, actor: Actor, budget: Budget) -> None:
    if budget.exhausted_period is not None:
        _forget_keys_under(budget)
    record_audit(actor=actor, organization=budget.organization, action="budget.delete", target=budget,
                 detail={"scope": budget.scope, "amount": str(budget.amount)})
    budget.delete()


# --- hard limits ---------------------------------------------------------------------------------

def keys_under(budget: Budget):
    keys = InferenceKey.objects.filter(organization_id=budget.organization_id)
    if budget.scope == Budget.Scope.DEPARTMENT:
        keys = keys.filter(department_id=budget.department_id)
    elif budget.scope == Budget.Scope.KEY:
        keys = keys.filter(pk=budget.key_id)
    return keys


def _forget_keys_under(budget: Budget) -> None:
    hashes = [h for pair in keys_under(budget).values_list("secret_hash", "previous_secret_hash") for h in pair if h]
    forget_verification(*hashes)
    transaction.on_commit(lambda: forget_verification(*hashes))


def _count_every_committed_event(organization_ids: Iterable[int]) -> None:
    """Fold the organizations' queued batches now (waiting for a folder that holds some), so that
    the rollups a hard budget's spending is read from count every event committed so far, and
    the caller's own. Callers hold the organizations' hard budgets locked (select_for_update):
    every batch of theirs takes that lock before it commits, so none can commit unfolded between
    this fold and the caller's commit."""
    organization_ids = sorted(set(organization_ids))
    if organization_ids:
        fold_pending(organization_ids=organization_ids, wait=True)


def _enforce(budget: Budget, now: datetime) -> bool:
    """Mark a hard budget exhausted for the current period once its spending reaches it."""
    if not budget.hard_limit:
        return False
    _count_every_committed_event([budget.organization_id])
    state = budget_state(budget, now)
    if budget.exhausted_period == state.period.start or state.spent < budget.amount:
        return False
    # Conditional, so a caller holding a stale copy of the row never marks (and announces) twice.
    marked = (Budget.objects.filter(pk=budget.pk).exclude(exhausted_period=state.period.start)
              .update(exhausted_period=state.period.start))
    budget.exhausted_period = state.period.start
    if not marked:
        return False
    _forget_keys_under(budget)
    emit_event(organization=budget.organization, type=Webhook.Event.BUDGET_EXHAUSTED,
               data=_event_data(state, threshold=100))
    logger.info("budget %s exhausted for %s: spent %s of %s %s", budget.uuid, state.period.start,
                state.spent, budget.amount, budget.currency)
    return True


def enforce_hard_limits(organization_ids: Iterable[int], *, now: datetime | None = None) -> int:
    """Inside an ingestion transaction: the hard budgets of these organizations that the batch
    just took to their amount are marked exhausted, in the same transaction. Returns how many."""
    now = now or timezone.now()
    # Locked, in id order: a concurrent batch of the same organization waits here until this one
    # commits, and then reads a spending that includes it, so the batch that crosses the amount
    # is the one that marks it (without the lock two batches could each see the other's spending
    # missing and neither mark it).
    hard = list(Budget.objects.select_for_update(of=("self",)).filter(organization_id__in=set(organization_ids),
                                                                        hard_limit=True)
                .select_related("organization").order_by("pk"))
    # Every organization's queue at once, before any rollup row is locked: folding them one at a
    # time could hold one organization's rollup rows while waiting for a folder that waits for them.
    _count_every_committed_event(budget.organization_id for budget in hard)
    return sum(_enforce(budget, now) for budget in hard)


def exhausted_for_key(key: InferenceKey, *, now: datetime | None = None) -> bool:
    """Whether a hard budget over `key` (its organization's, its department's, its own) is spent
    for the current period. One indexed query; the verify cache keeps the answer."""
    period = Period.of(key.organization, now or timezone.now())
    return Budget.objects.filter(
        Q(scope=Budget.Scope.ORGANIZATION) | Q(scope=Budget.Scope.DEPARTMENT, department_id=key.department_id)
        | Q(scope=Budget.Scope.KEY, key_id=key.pk),
        organization_id=key.organization_id, hard_limit=True, exhausted_period=period.start,
    ).exists()


def budget_exhausted(key: InferenceKey) -> bool:
    """Whether `key` must stop: a hard budget over it is spent for the current period, or the
    account's monthly budget (AIone's `monthly_budget`) is."""
    if exhausted_for_key(key):
        return True
    organization = key.organization
    account = BillingAccount.objects.filter(organization=organization).only("monthly_budget").first()
    if account is None or account.monthly_budget is None:
        return False
    return month_to_date_cost(organization) >= account.monthly_budget


# --- the budget job ------------------------------------------------------------------------------

@dataclass
class BudgetJobReport:
    budgets: int = 0
    alerts: int = 0
    exhausted: int = 0
    reopened: int = 0
    grants_expired: int = 0


def _event_data(state: BudgetState, threshold: int) -> dict:
    budget = state.budget
    target = budget.department.uuid if budget.department_id else (budget.key.uuid if budget.key_id else None)
    return {"budget_id": str(budget.uuid), "scope": budget.scope, "target_id": str(target) if target else None,
            "threshold": threshold, "amount": decimal_string(budget.amount),
            "spent": decimal_string(state.spent), "currency": budget.currency,
            "period_start": state.period.start.isoformat()}


def _alert(state: BudgetState, threshold: int) -> bool:
    """Record and send one threshold alert, unless this threshold already alerted this period."""
    budget = state.budget
    try:
        with transaction.atomic():
            BudgetAlert.objects.create(budget=budget, period_start=state.period.start, threshold=threshold,
                                       spent=state.spent)
            emit_event(organization=budget.organization, type=Webhook.Event.BUDGET_THRESHOLD,
                       data=_event_data(state, threshold))
    except IntegrityError:
        return False  # another job alerted first
    email = BillingAccount.objects.filter(organization=budget.organization).values_list(
        "billing_email", flat=True).first()
    if email:
        send_mail(
            subject=f"[{budget.organization.name}] {threshold}% of your {budget.scope} budget used",
            message=(f"{round_display_amount(state.spent)} of {round_display_amount(budget.amount)} "
                     f"{budget.currency} spent in the period starting {state.period.start:%Y-%m-%d}."),
            from_email=settings.DEFAULT_FROM_EMAIL, recipient_list=[email], fail_silently=True)
    return True


def run_budget_job(*, now: datetime | None = None) -> BudgetJobReport:
    """Expire grants, send due threshold alerts, enforce hard limits, reopen budgets whose period
    ended. Every step is idempotent: a rerun (or a concurrent run) sends nothing twice."""
    now = now or timezone.now()
    report = BudgetJobReport(grants_expired=expire_grants(now=now))
    for pk in Budget.objects.order_by("pk").values_list("pk", flat=True):
        report.budgets += 1
        with transaction.atomic():
            # Re-read under the row's lock: a batch may have marked it since the job started.
            budget = (Budget.objects.select_for_update(of=("self",))
                      .select_related("organization", "department", "key").filter(pk=pk).first())
            if budget is None:
                continue  # deleted meanwhile
            state = budget_state(budget, now)
            if budget.exhausted_period is not None and budget.exhausted_period != state.period.start:
                Budget.objects.filter(pk=pk, exhausted_period=budget.exhausted_period).update(exhausted_period=None)
                _forget_keys_under(budget)
                budget.exhausted_period = None
                report.reopened += 1
            report.exhausted += _enforce(budget, now)
        for threshold in budget.thresholds:
            if state.reached(threshold):
                report.alerts += _alert(state, threshold)
    logger.info("budget job at %s: %d budgets, %d alerts, %d exhausted, %d reopened, %d grants expired",
                now.isoformat(), report.budgets, report.alerts, report.exhausted, report.reopened,
                report.grants_expired)
    return report
