"""The AIone dashboard's numbers (API.md §3), for whoever shows them: the `GET /api/v1/obs/dashboard`
dialect renders them as the seed's JSON, the portal's dashboard page as cards and charts.

One function, `dashboard_of`, reads everything (the query engine for usage, billing's selectors for
the plan and the month-to-date cost) and returns typed values (Decimals, dates, model and
department objects); each caller only formats. A percentage is kept as the 2-place figure the API
writes, because the statuses derived from it (capacity) are decided on that figure.

This module stands on the billing floor (pyproject.toml), not usage's: the dashboard's budget
progress and plan capacity are billing's reads."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.db import models
from django.utils import timezone

from billing.budgets import BudgetState, budget_state
from billing.models import BillingAccount, Budget, Model
from billing.money import round_display_amount
from billing.selectors import current_subscription, month_to_date_cost
from portal.models import Department, Organization
from usage.query import for_organization
from usage.selectors import data_freshness, objects_named_in, peak_requests_per_minute
from usage.timebuckets import Granularity, last_days

# Recent error rate thresholds for service_status, over the last hour.
DEGRADED_ERROR_RATE = Decimal("0.05")
OUTAGE_ERROR_RATE = Decimal("0.25")
# Share of a limit (percent) at which capacity is "tight".
TIGHT_SHARE = Decimal(80)
RANGE_DAYS = (1, 90)  # the range a caller may ask for, in days


def percent(numerator: Decimal, denominator: Decimal) -> Decimal:
    """numerator ÷ denominator as a percentage with the 2 places the API writes (0 over nothing)."""
    return round_display_amount(Decimal(100) * numerator / denominator) if denominator else Decimal("0.00")


@dataclass(frozen=True)
class DailyPoint:
    day: date
    requests: int
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class ModelShare:
    model: Model
    requests: int
    tokens: int
    cost: Decimal


@dataclass(frozen=True)
class TeamCost:
    department: Department
    cost: Decimal
    conversations: int


@dataclass(frozen=True)
class Dashboard:
    start: datetime
    end: datetime
    currency: str
    department: Department | None  # the one department shown, or None for the organization
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: Decimal
    errors: int
    error_rate_pct: Decimal
    avg_latency_ms: Decimal
    p99_latency_ms: Decimal
    characters: int
    conversations: int  # distinct: a conversation that spans two teams counts once here
    peak_requests_per_minute: int
    plan_rpm: int
    rpm_usage_pct: Decimal
    monthly_budget: Decimal | None  # the account's; None when it has none or one department is shown
    month_to_date_cost: Decimal | None
    budget_progress_pct: Decimal | None
    capacity_status: str  # sufficient | tight | exhausted
    service_status: str  # normal | degraded | outage
    daily: list[DailyPoint]
    models: list[ModelShare]  # most requests first
    teams: list[TeamCost]  # most expensive first
    data_freshness: datetime | None

    @property
    def has_usage(self) -> bool:
        return self.requests > 0


def dashboard_of(organization: Organization, range_days: int, *, department: Department | None = None,
                 now: datetime | None = None) -> Dashboard:
    """The dashboard of the last `range_days` days of the organization's clock, for the whole
    organization or, with `department`, for that department alone (every figure narrowed to it;
    the account's monthly budget, which is the organization's, is then left out)."""
    now = now or timezone.now()
    start, end = last_days(organization.zone, range_days, now)
    usage = for_organization(organization)
    narrowed = {"departments": (department.pk,)} if department is not None else {}
    totals = usage.total(start, end, percentiles=(99,), **narrowed)
    trend = usage.run(start, end, granularity=Granularity.of("day"), **narrowed).rows
    by_model = [row for row in usage.run(start, end, group_by=("model",), **narrowed).rows if row.requests]
    # Distinct conversations: from their per-day counts (usage/activity.py) when the range ends
    # after the newest event, else from raw events; ask only for what the ranking shows.
    by_team = usage.run(start, end, group_by=("department",), conversations=True, sums=("cost_units",),
                        latency_range=False, **narrowed).rows
    conversations = usage.total(start, end, conversations=True, sums=("requests",), latency_range=False,
                                **narrowed).conversations

    subscription = current_subscription(organization)
    plan_rpm = subscription.plan.rpm_limit if subscription else 0
    peak = peak_requests_per_minute(organization.pk, start, end, departments=narrowed.get("departments", ()),
                                    zone=organization.zone)
    rpm_pct = percent(Decimal(peak), Decimal(plan_rpm))
    account = BillingAccount.objects.filter(organization=organization).first()
    budget = account.monthly_budget if account and department is None else None
    spent = month_to_date_cost(organization, now) if budget else None
    budget_pct = percent(spent, budget) if budget else None

    models = objects_named_in(by_model, "model")["model"]
    teams = objects_named_in(by_team, "department")["department"]
    ranking = sorted((row for row in by_team if row.requests),
                     key=lambda row: (-row.cost_units, teams[row.group["department"]].name))
    return Dashboard(
        start=start, end=end, currency=account.currency if account else "", department=department,
        requests=totals.requests, prompt_tokens=totals.prompt_tokens, completion_tokens=totals.completion_tokens,
        total_tokens=totals.total_tokens, cost=totals.cost, errors=totals.errors,
        error_rate_pct=percent(Decimal(totals.errors), Decimal(totals.requests)),
        avg_latency_ms=(totals.latency_avg_ms or Decimal(0)).quantize(Decimal("0.1")),
        p99_latency_ms=Decimal(str(round(totals.percentiles.get(99) or 0, 1))),
        characters=totals.characters, conversations=conversations,
        peak_requests_per_minute=peak, plan_rpm=plan_rpm, rpm_usage_pct=rpm_pct,
        monthly_budget=budget, month_to_date_cost=spent, budget_progress_pct=budget_pct,
        capacity_status=_capacity(rpm_pct, budget_pct),
        service_status=_service_status(organization, now, narrowed),
        daily=[DailyPoint(row.bucket.start.date(), row.requests, row.total_tokens, row.cost) for row in trend],
        models=sorted((ModelShare(models[row.group["model"]], row.requests, row.total_tokens, row.cost)
                       for row in by_model), key=lambda share: (-share.requests, share.model.code)),
        teams=[TeamCost(teams[row.group["department"]], row.cost, row.conversations) for row in ranking],
        data_freshness=data_freshness(organization.pk, end),
    )


def budget_progress(organization: Organization, *, department: Department | None = None,
                    now: datetime | None = None) -> list[BudgetState]:
    """Each budget's spending this period (billing.budgets.budget_state, as the budgets API
    shows it): the organization's own and every department's and key's, or, for one department,
    that department's and its keys'."""
    budgets = Budget.objects.filter(organization=organization).select_related("organization", "department", "key")
    if department is not None:
        budgets = budgets.filter(models.Q(department=department) | models.Q(key__department=department))
    first = {Budget.Scope.ORGANIZATION: 0, Budget.Scope.DEPARTMENT: 1, Budget.Scope.KEY: 2}
    return [budget_state(budget, now) for budget in sorted(budgets, key=lambda b: (first[b.scope], b.pk))]


def _capacity(rpm_pct: Decimal, budget_pct: Decimal | None) -> str:
    worst = max(rpm_pct, budget_pct or Decimal(0))
    if worst >= 100:
        return "exhausted"
    return "tight" if worst >= TIGHT_SHARE else "sufficient"


def _service_status(organization: Organization, now: datetime, narrowed: dict) -> str:
    recent = for_organization(organization).total(now - timedelta(hours=1), now, **narrowed)
    if recent.error_rate >= OUTAGE_ERROR_RATE:
        return "outage"
    return "degraded" if recent.error_rate >= DEGRADED_ERROR_RATE else "normal"


__all__ = ["RANGE_DAYS", "Dashboard", "DailyPoint", "ModelShare", "TeamCost", "budget_progress", "dashboard_of",
           "percent"]
