"""AIone dialect (seed 000): `GET /api/v1/obs/usage` and `GET /api/v1/obs/dashboard`.

A request parser and a response renderer around the query engine (the dashboard's numbers come
from usage.dashboard, which the portal's dashboard page reads too). Money is a decimal string
rounded half-up to 2 places (billing.money.round_display_amount); days are the organization's."""

from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.catalog import model_by_code
from billing.money import decimal_string
from keys.selectors import key_in
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.fields import DayField, PageField
from portal.api.permissions import RamTarget, whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, parse_query
from portal.models import Department, Organization
from portal.selectors import department_in
from usage.dashboard import dashboard_of
from usage.query import for_organization
from usage.selectors import objects_named_in

GROUP_NAMES = {"day": None, "model": "model", "team": "department", "key": "key"}
_S = serializers


class UsageQueryParams(_S.Serializer):
    start_date = DayField(required=False, help_text="First day (organization's timezone); default 6 days ago")
    end_date = DayField(required=False, help_text="Day after the last day (exclusive); default tomorrow")
    team_id = _S.UUIDField(required=False)
    key_id = _S.UUIDField(required=False)
    model = _S.CharField(required=False, max_length=100)
    group_by = _S.CharField(required=False, default="day", help_text="comma list of day, model, team, key")
    page = PageField(required=False, default=1)
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
        rows = for_organization(organization).over_days(start_day, end_day, by_day="day" in group_by,
                                                         group_by=engine_groups, **filters)
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

class ObsDashboardView(RamAPIView):
    ram_actions = {"GET": "usage:GetDashboard"}
    ram_resource = whole_collection

    @aione(DashboardResponse, parameters=[DashboardParams])
    def get(self, request):
        params = parse_query(DashboardParams, request)
        return Response(dashboard(request.organization, params["range_days"], params["view_mode"]))


def dashboard(organization: Organization, range_days: int, view_mode: str) -> dict:
    """The seed's DashboardResponse, rendered from usage.dashboard (the portal's dashboard page
    reads the same)."""
    board = dashboard_of(organization, range_days)
    daily_trend = [{"date": point.day.isoformat(), "requests": point.requests, "tokens": point.tokens,
                    "cost_rmb": decimal_string(point.cost)} for point in board.daily]
    budget_pct = board.budget_progress_pct
    return {
        "view_mode": view_mode,
        "tech": {
            "total_tokens": board.total_tokens, "prompt_tokens": board.prompt_tokens,
            "completion_tokens": board.completion_tokens, "total_requests": board.requests,
            "total_cost_rmb": decimal_string(board.cost),
            "avg_latency_ms": board.avg_latency_ms, "p99_latency_ms": board.p99_latency_ms,
            "error_rate_pct": str(board.error_rate_pct), "rpm_usage_pct": str(board.rpm_usage_pct),
            "model_distribution": [{"model": share.model.code, "requests": share.requests, "tokens": share.tokens}
                                   for share in board.models],
            "daily_trend": daily_trend,
        },
        "business": {
            "total_chars_wan": (Decimal(board.characters) / 10000).quantize(Decimal("0.01")),
            "total_conversations": board.conversations,
            "total_cost_rmb": decimal_string(board.cost),
            "budget_progress_pct": str(budget_pct) if budget_pct is not None else None,
            "capacity_status": board.capacity_status,
            "service_status": board.service_status,
            "team_cost_ranking": [
                {"team_id": str(team.department.uuid), "team_name": team.department.name,
                 "cost_rmb": decimal_string(team.cost), "conversations": team.conversations}
                for team in board.teams],
            "daily_trend": daily_trend,
        },
        "data_freshness": board.data_freshness.isoformat() if board.data_freshness else None,
    }
