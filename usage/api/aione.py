"""AIone dialect (seed 000): `GET /api/v1/obs/usage` and `GET /api/v1/obs/dashboard`.

A request parser and a response renderer around the query engine. Money is a decimal string
rounded half-up to 2 places (billing.money.round_display_amount); days are the organization's."""

from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django.utils import timezone
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.catalog import model_by_code
from billing.models import BillingAccount
from billing.money import decimal_string
from billing.selectors import current_subscription, month_to_date_cost
from keys.selectors import key_in
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.permissions import RamTarget, whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, parse_query
from portal.models import Department, Organization
from portal.selectors import department_in
from usage.query import for_organization
from usage.selectors import data_freshness, objects_named_in, peak_requests_per_minute
from usage.timebuckets import Granularity, last_days, local_midnight_of

GROUP_NAMES = {"day": None, "model": "model", "team": "department", "key": "key"}
_S = serializers


def percent(numerator: Decimal, denominator: Decimal) -> str:
    return decimal_string(Decimal(100) * numerator / denominator) if denominator else "0.00"


class UsageQueryParams(_S.Serializer):
    start_date = _S.DateField(required=False, help_text="First day (organization's timezone); default 6 days ago")
    end_date = _S.DateField(required=False, help_text="Day after the last day (exclusive); default tomorrow")
    team_id = _S.UUIDField(required=False)
    key_id = _S.UUIDField(required=False)
    model = _S.CharField(required=False, max_length=100)
    group_by = _S.CharField(required=False, default="day", help_text="comma list of day, model, team, key")
    page = _S.IntegerField(required=False, default=1, min_value=1)
    page_size = _S.IntegerField(required=False, default=50, min_value=1, max_value=1000)

    def validate_group_by(self, value: str) -> list[str]:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in GROUP_NAMES]
        if unknown or not names:
            raise _S.ValidationError(f"choose from day, model, team, key (got {value!r})")
        return list(dict.fromkeys(names))

    def validate(self, attrs):
        start, end = attrs.get("start_date"), attrs.get("end_date")
        if start and end and end <= start:
            raise _S.ValidationError({"end_date": "must be after start_date"})
        if start and end and (end - start).days > 366:
            raise _S.ValidationError({"end_date": "at most 366 days after start_date"})
        return attrs


USAGE_ROW_FIELDS = {
    "date": _S.DateField(allow_null=True), "team_id": _S.UUIDField(allow_null=True),
    "key_id": _S.UUIDField(allow_null=True), "model": _S.CharField(allow_null=True),
    "requests": _S.IntegerField(), "prompt_tokens": _S.IntegerField(), "completion_tokens": _S.IntegerField(),
    "total_tokens": _S.IntegerField(), "cost_rmb": _S.CharField(), "error_count": _S.IntegerField(),
    "avg_latency_ms": _S.FloatField(allow_null=True)}
UsageResponse = inline_serializer("UsageResponse", {
    "items": inline_serializer("UsageRow", USAGE_ROW_FIELDS, many=True), "total": _S.IntegerField()})


def _found(found, field: str, what: str):
    if found is None:
        raise InvalidRequest([FieldProblem(["query", field], f"unknown {what}", "value_error.not_found")])
    return found


class ObsUsageView(RamAPIView):
    ram_actions = {"GET": "usage:QueryUsage"}

    def ram_resource(self, request) -> list[RamTarget]:
        return [RamTarget.department(self.department)]  # the team named in the query, if any

    @cached_property
    def params(self) -> dict:
        return parse_query(UsageQueryParams, self.request)

    @cached_property
    def department(self) -> Department | None:
        if "team_id" not in self.params:
            return None
        return _found(department_in(self.request.organization, uuid=self.params["team_id"]), "team_id", "team")

    @aione(UsageResponse, parameters=[UsageQueryParams])
    def get(self, request):
        params, organization, department = self.params, request.organization, self.department
        zone = organization.zone
        today = datetime.now(zone).date()
        start_day = params.get("start_date") or today - timedelta(days=6)
        end_day = params.get("end_date") or today + timedelta(days=1)
        if end_day <= start_day:
            raise InvalidRequest([FieldProblem(["query", "end_date"], "must be after start_date")])
        filters: dict = {}
        if department:
            filters["departments"] = (department.pk,)
        if "key_id" in params:
            filters["keys"] = (_found(key_in(organization, uuid=params["key_id"]), "key_id", "key").pk,)
        if "model" in params:
            filters["models"] = (_found(model_by_code(params["model"]), "model", "model").pk,)
        group_by = params["group_by"]
        engine_groups = tuple(GROUP_NAMES[name] for name in group_by if GROUP_NAMES[name])
        result = for_organization(organization).run(
            local_midnight_of(start_day, zone), local_midnight_of(end_day, zone),
            granularity=Granularity.of("day") if "day" in group_by else None, group_by=engine_groups, **filters)
        rows = result.rows if group_by == ["day"] or not engine_groups else [r for r in result.rows if r.requests]
        names = objects_named_in(rows, "department", "key", "model")
        start = (params["page"] - 1) * params["page_size"]
        page = rows[start : start + params["page_size"]]
        return Response({"items": [_usage_row(row, "day" in group_by, names) for row in page], "total": len(rows)})


def _usage_row(row, by_day: bool, names) -> dict:
    def uuid_of(kind):
        value = row.group.get(kind)
        return str(names[kind][value].uuid) if value is not None else None
    model = row.group.get("model")
    return {
        "date": row.bucket.start.date().isoformat() if by_day else None,
        "team_id": uuid_of("department"), "key_id": uuid_of("key"),
        "model": names["model"][model].code if model is not None else None,
        "requests": row.requests, "prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens, "cost_rmb": decimal_string(row.cost), "error_count": row.errors,
        "avg_latency_ms": row.latency_avg_ms.quantize(Decimal("0.1")) if row.latency_avg_ms is not None else None,
    }


# --- dashboard -----------------------------------------------------------------------------

class DashboardParams(_S.Serializer):
    range_days = _S.IntegerField(required=False, default=7, min_value=1, max_value=90)
    view_mode = _S.ChoiceField(choices=["tech", "business"], required=False, default="tech")


class DailyTrend(_S.Serializer):
    date = _S.DateField()
    requests = _S.IntegerField()
    tokens = _S.IntegerField()
    cost_rmb = _S.CharField()
DashboardResponse = inline_serializer("DashboardResponse", {
    "view_mode": _S.ChoiceField(choices=["tech", "business"]),
    "tech": inline_serializer("TechDashboardData", {
        "total_tokens": _S.IntegerField(), "prompt_tokens": _S.IntegerField(), "completion_tokens": _S.IntegerField(),
        "total_requests": _S.IntegerField(), "total_cost_rmb": _S.CharField(),
        "avg_latency_ms": _S.FloatField(), "p99_latency_ms": _S.FloatField(), "error_rate_pct": _S.CharField(),
        "rpm_usage_pct": _S.CharField(),
        "model_distribution": inline_serializer("ModelDistribution", {
            "model": _S.CharField(), "requests": _S.IntegerField(), "tokens": _S.IntegerField()}, many=True),
        "daily_trend": DailyTrend(many=True)}),
    "business": inline_serializer("BusinessDashboardData", {
        "total_chars_wan": _S.FloatField(), "total_conversations": _S.IntegerField(),
        "total_cost_rmb": _S.CharField(), "budget_progress_pct": _S.CharField(allow_null=True),
        "capacity_status": _S.ChoiceField(choices=["sufficient", "tight", "exhausted"]),
        "service_status": _S.ChoiceField(choices=["normal", "degraded", "outage"]),
        "team_cost_ranking": inline_serializer("TeamCostItem", {
            "team_id": _S.UUIDField(), "team_name": _S.CharField(), "cost_rmb": _S.CharField(),
            "conversations": _S.IntegerField()}, many=True),
        "daily_trend": DailyTrend(many=True)}),
    "data_freshness": _S.CharField(allow_null=True)})

# Recent error rate thresholds for service_status, over the last hour.
DEGRADED_ERROR_RATE = Decimal("0.05")
OUTAGE_ERROR_RATE = Decimal("0.25")
# Share of a limit at which capacity is "tight".
TIGHT_SHARE = Decimal(80)


class ObsDashboardView(RamAPIView):
    ram_actions = {"GET": "usage:GetDashboard"}
    ram_resource = whole_collection

    @aione(DashboardResponse, parameters=[DashboardParams])
    def get(self, request):
        params = parse_query(DashboardParams, request)
        return Response(dashboard(request.organization, params["range_days"], params["view_mode"]))


def dashboard(organization: Organization, range_days: int, view_mode: str) -> dict:
    start, end = last_days(organization.zone, range_days, timezone.now())
    usage = for_organization(organization)
    totals = usage.total(start, end, percentiles=(99,))
    trend = usage.run(start, end, granularity=Granularity.of("day")).rows
    by_model = [row for row in usage.run(start, end, group_by=("model",)).rows if row.requests]
    # From raw events (distinct conversations): ask only for what the ranking shows.
    by_team = usage.run(start, end, group_by=("department",), conversations=True, sums=("cost_units",),
                        latency_range=False).rows
    # Distinct across the organization: a conversation that spans two teams counts once here.
    conversations = usage.total(start, end, conversations=True, sums=("requests",), latency_range=False).conversations

    subscription = current_subscription(organization)
    plan_rpm = subscription.plan.rpm_limit if subscription else 0
    rpm_pct = percent(Decimal(peak_requests_per_minute(organization.pk, start, end)), Decimal(plan_rpm))
    account = BillingAccount.objects.filter(organization=organization).first()
    budget = account.monthly_budget if account else None
    budget_pct = percent(month_to_date_cost(organization), budget) if budget else None

    daily_trend = [{"date": row.bucket.start.date().isoformat(), "requests": row.requests,
                    "tokens": row.total_tokens, "cost_rmb": decimal_string(row.cost)} for row in trend]
    codes = {pk: model.code for pk, model in objects_named_in(by_model, "model")["model"].items()}
    teams = objects_named_in(by_team, "department")["department"]
    ranking = sorted((row for row in by_team if row.requests), key=lambda row: (-row.cost_units,
                                                                                 teams[row.group["department"]].name))
    return {
        "view_mode": view_mode,
        "tech": {
            "total_tokens": totals.total_tokens, "prompt_tokens": totals.prompt_tokens,
            "completion_tokens": totals.completion_tokens, "total_requests": totals.requests,
            "total_cost_rmb": decimal_string(totals.cost),
            "avg_latency_ms": (totals.latency_avg_ms or Decimal(0)).quantize(Decimal("0.1")),
            "p99_latency_ms": Decimal(str(round(totals.percentiles.get(99) or 0, 1))),
            "error_rate_pct": percent(Decimal(totals.errors), Decimal(totals.requests)),
            "rpm_usage_pct": rpm_pct,
            "model_distribution": sorted(
                ({"model": codes[row.group["model"]], "requests": row.requests, "tokens": row.total_tokens}
                 for row in by_model), key=lambda item: (-item["requests"], item["model"])),
            "daily_trend": daily_trend,
        },
        "business": {
            "total_chars_wan": (Decimal(totals.characters) / 10000).quantize(Decimal("0.01")),
            "total_conversations": conversations,
            "total_cost_rmb": decimal_string(totals.cost),
            "budget_progress_pct": budget_pct,
            "capacity_status": _capacity(rpm_pct, budget_pct),
            "service_status": _service_status(organization),
            "team_cost_ranking": [
                {"team_id": str(teams[row.group["department"]].uuid), "team_name": teams[row.group["department"]].name,
                 "cost_rmb": decimal_string(row.cost), "conversations": row.conversations} for row in ranking],
            "daily_trend": daily_trend,
        },
        "data_freshness": _freshness(organization, end),
    }


def _capacity(rpm_pct: str, budget_pct: str | None) -> str:
    worst = max(Decimal(rpm_pct), Decimal(budget_pct or 0))
    if worst >= 100:
        return "exhausted"
    return "tight" if worst >= TIGHT_SHARE else "sufficient"


def _service_status(organization: Organization) -> str:
    now = timezone.now()
    recent = for_organization(organization).total(now - timedelta(hours=1), now)
    if recent.error_rate >= OUTAGE_ERROR_RATE:
        return "outage"
    return "degraded" if recent.error_rate >= DEGRADED_ERROR_RATE else "normal"


def _freshness(organization: Organization, end: datetime) -> str | None:
    newest = data_freshness(organization.pk, end)
    return newest.isoformat() if newest else None

