"""Weave dialect (seed 002): `POST /calls/stats`.

Parses the request strictly (unknown fields are 422), picks the granularity as Weave does, asks
the engine for per-model usage buckets and per-bucket call statistics, and renders columns named
`<aggregation>_<metric>` and `p<N>_<metric>`."""

import uuid
import zoneinfo
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property, partial
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from portal.api.errors import AIoneDialect, FieldProblem, InvalidRequest
from portal.api.fields import InstantField
from portal.api.permissions import RamTarget
from portal.api.schema import AIONE_ERRORS
from portal.api.views import RamAPIView, parse_body
from portal.models import Department, Member
from usage.query import Distribution, Result, for_organization
from usage.selectors import model_codes
from usage.timebuckets import Granularity


class WeaveDialect(AIoneDialect):
    """Weave answers in FastAPI's shapes too."""

    tag = "Weave"


_S = serializers
AGGREGATIONS = ("sum", "avg", "min", "max", "count")
# Weave metric -> (Row attribute for the sum, per-event value for min/max/percentiles)
USAGE_METRICS = {
    "input_tokens": ("prompt_tokens", "prompt_tokens"),
    "output_tokens": ("completion_tokens", "completion_tokens"),
    "total_tokens": ("total_tokens", "total_tokens"),
    "cache_read_input_tokens": ("cached_tokens", "cached_tokens"),
    "input_cost": ("prompt_cost", "input_cost"),
    "output_cost": ("output_cost", "output_cost"),
    "total_cost": ("cost", "cost"),
}
CALL_METRICS = {"latency_ms": ("latency_sum_ms", "latency_ms"), "call_count": ("requests", None),
                "error_count": ("errors", "errors")}
MAX_BUCKETS = 10_000
AUTO_GRANULARITY = ((timedelta(hours=2), 300), (timedelta(hours=12), 3600), (timedelta(days=3), 21600),
                    (timedelta(days=14), 43200))


class StrictSerializer(_S.Serializer):
    """Unknown fields are errors, as Weave's own API treats them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise _S.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class StrictCharField(_S.CharField):
    """A string, and only a string: 7 is not a project id."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class MetricSpec(StrictSerializer):
    metric = _S.CharField()
    aggregations = _S.ListField(child=_S.ChoiceField(choices=AGGREGATIONS), required=False, default=list)
    percentiles = _S.ListField(
        child=_S.FloatField(min_value=0, max_value=100), required=False, default=list,
        help_text="Percentiles 0-100, computed as PostgreSQL's percentile_cont (linear between the two values "
                  "around rank (n - 1) * p / 100); latency percentiles come from histograms, within 2 %.")


class UsageMetricSpec(MetricSpec):
    metric = _S.ChoiceField(choices=sorted(USAGE_METRICS))


class CallMetricSpec(MetricSpec):
    metric = _S.ChoiceField(choices=sorted(CALL_METRICS))


def _strings() -> _S.ListField:
    return _S.ListField(child=_S.CharField(max_length=128), required=False, default=list)


class CallsFilter(StrictSerializer):
    op_names = _strings()
    input_refs = _strings()
    output_refs = _strings()
    parent_ids = _strings()
    trace_ids = _strings()
    call_ids = _strings()
    thread_ids = _strings()
    turn_ids = _strings()
    trace_roots_only = _S.BooleanField(required=False, default=False)
    wb_user_ids = _strings()
    wb_run_ids = _strings()


class CallsStatsRequest(StrictSerializer):
    project_id = StrictCharField(max_length=80, help_text=(
        "The organization's uuid (Weave's entity), optionally followed by `/` and a department's uuid (its "
        "project); another organization's project is not found (404)."))
    start = InstantField()
    end = InstantField(required=False, allow_null=True, default=None)
    granularity = _S.IntegerField(required=False, allow_null=True, min_value=1, default=None)
    usage_metrics = UsageMetricSpec(many=True, required=False, default=list)
    call_metrics = CallMetricSpec(many=True, required=False, default=list)
    filter = CallsFilter(required=False, default=dict)
    timezone = _S.CharField(required=False, default="UTC")

    def validate_timezone(self, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
            raise _S.ValidationError(f"{value!r} is not an IANA time zone") from error
        return value

    def validate(self, attrs):
        end = attrs.get("end") or timezone.now()
        if end <= attrs["start"]:
            raise _S.ValidationError({"end": "must be after start"})
        attrs["end"] = end
        return attrs


StatsResponse = inline_serializer("CallsStatsResponse", {
    "start": _S.DateTimeField(), "end": _S.DateTimeField(), "granularity": _S.IntegerField(),
    "timezone": _S.CharField(), "usage_buckets": _S.ListField(child=_S.DictField()),
    "call_buckets": _S.ListField(child=_S.DictField())})


def choose_granularity(start: datetime, end: datetime, requested: int | None) -> int:
    span = end - start
    granularity = requested
    if granularity is None:
        granularity = next((seconds for limit, seconds in AUTO_GRANULARITY if span <= limit), 86400)
    seconds = int(span.total_seconds())
    if seconds / granularity > MAX_BUCKETS:
        granularity = seconds // MAX_BUCKETS + 1
    return granularity


def _label(percentile: float) -> str:
    return f"p{percentile:g}"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class CallsStatsView(RamAPIView):
    ram_actions = {"POST": "usage:QueryCallStats"}
    dialect = WeaveDialect

    def ram_resource(self, request) -> list[RamTarget]:
        return [RamTarget.department(self.department)]  # the project's department, if it names one

    @cached_property
    def body(self) -> dict[str, Any]:
        return parse_body(CallsStatsRequest, self.request)

    @cached_property
    def department(self) -> Department | None:
        return self._project(self.request.organization, self.body["project_id"])

    @extend_schema(request=CallsStatsRequest, responses={200: StatsResponse, **AIONE_ERRORS})
    def post(self, request):
        data, organization, department = self.body, request.organization, self.department
        granularity = choose_granularity(data["start"], data["end"], data["granularity"])
        # Buckets in the request's timezone (Weave's own parameter), levels chosen on the organization's clock.
        usage = partial(for_organization(organization).run, start=data["start"], end=data["end"],
                        timezone=data["timezone"], granularity=Granularity.of(granularity),
                        departments=(department.pk,) if department else (),
                        **self._filters(organization, data["filter"]))
        usage_buckets = self._usage(usage, data["usage_metrics"])
        call_buckets = self._calls(usage, data["call_metrics"])
        return Response({"start": _utc(data["start"]), "end": _utc(data["end"]), "granularity": granularity,
                         "timezone": data["timezone"], "usage_buckets": usage_buckets, "call_buckets": call_buckets})

    def _project(self, organization, project_id: str) -> Department | None:
        # Another organization's project is not found, exactly like a project that does not exist.
        org_part, _, department_part = project_id.partition("/")
        if org_part != str(organization.uuid):
            raise InvalidRequest([FieldProblem(["body", "project_id"], "project not found")], status_code=404)
        if not department_part:
            return None
        department = Department.objects.filter(organization=organization, uuid__iexact=department_part).first() \
            if _is_uuid(department_part) else None
        if department is None:
            raise InvalidRequest([FieldProblem(["body", "project_id"], "project not found")], status_code=404)
        return department

    def _filters(self, organization, given: dict) -> dict[str, Any]:
        spec = {name: given.get(name, []) for name in CallsFilter().fields}
        spec["trace_roots_only"] = given.get("trace_roots_only", False)
        trace = [(name, tuple(spec[name])) for name in ("op_names", "parent_ids", "trace_ids", "thread_ids",
                                                          "turn_ids") if spec[name]]
        if spec["call_ids"]:
            trace.append(("request_ids", tuple(spec["call_ids"])))
        if spec["wb_run_ids"]:
            trace.append(("conversation_ids", tuple(spec["wb_run_ids"])))
        if spec["input_refs"] or spec["output_refs"]:
            trace.append(("request_ids", ()))  # no event carries object refs: nothing matches
        filters: dict[str, Any] = {"trace": tuple(trace), "trace_roots_only": spec["trace_roots_only"]}
        if spec["wb_user_ids"]:
            members = dict(Member.objects.filter(organization=organization, uuid__in=[
                u for u in spec["wb_user_ids"] if _is_uuid(u)]).values_list("uuid", "pk"))
            if len(members) != len(set(spec["wb_user_ids"])):
                raise InvalidRequest([FieldProblem(["body", "filter", "wb_user_ids"], "unknown user")])
            filters["members"] = tuple(members.values())
        return filters

    def _usage(self, usage: Callable[..., Result], metrics: list[dict]) -> list[dict]:
        if not metrics:
            return []
        distributions = tuple((USAGE_METRICS[m["metric"]][1], tuple(m["percentiles"])) for m in metrics
                              if m["percentiles"] or {"min", "max"} & set(m["aggregations"]))
        result = usage(group_by=("model",), distributions=_merge(distributions))
        codes = model_codes()
        buckets = []
        for row in result.rows:
            bucket = {"timestamp": row.bucket.start.isoformat(), "model": codes.get(row.group["model"]),
                      "count": row.requests}
            for spec in metrics:
                total_attr, value_name = USAGE_METRICS[spec["metric"]]
                total = row.input_cost + row.cache_read_cost if total_attr == "prompt_cost" else getattr(row,
                                                                                                      total_attr)
                bucket.update(_columns(spec, total, row.requests, row.distributions.get(value_name)))
            buckets.append(bucket)
        return buckets

    def _calls(self, usage: Callable[..., Result], metrics: list[dict]) -> list[dict]:
        if not metrics:
            return []
        latency_percentiles = tuple(p for m in metrics if m["metric"] == "latency_ms" for p in m["percentiles"])
        distributions = tuple((CALL_METRICS[m["metric"]][1], tuple(m["percentiles"])) for m in metrics
                              if m["metric"] == "error_count"
                              and (m["percentiles"] or {"min", "max"} & set(m["aggregations"])))
        result = usage(percentiles=tuple(dict.fromkeys(latency_percentiles)), distributions=distributions)
        buckets = []
        for row in result.rows:
            bucket: dict[str, Any] = {"timestamp": row.bucket.start.isoformat()}
            for spec in metrics:
                total_attr, value_name = CALL_METRICS[spec["metric"]]
                if spec["metric"] == "latency_ms":
                    spread = Distribution(row.latency_min_ms, row.latency_max_ms,
                                          {q: _round(row.percentiles.get(q)) for q in spec["percentiles"]})
                elif spec["metric"] == "call_count":
                    one = 1 if row.requests else None
                    spread = Distribution(one, one, {q: one for q in spec["percentiles"]})
                else:
                    spread = row.distributions.get(value_name)
                bucket.update(_columns(spec, getattr(row, total_attr), row.requests, spread))
            buckets.append(bucket)
        return buckets


def _merge(distributions):
    merged: dict[str, list[float]] = {}
    for name, qs in distributions:
        merged.setdefault(name, [])
        merged[name] += [q for q in qs if q not in merged[name]]
    return tuple((name, tuple(qs)) for name, qs in merged.items())


def _round(value):
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.001"))


def _columns(spec: dict, total, count: int, spread) -> dict[str, Any]:
    metric = spec["metric"]
    columns: dict[str, Any] = {}
    for aggregation in spec["aggregations"]:
        if aggregation == "sum":
            columns[f"sum_{metric}"] = total
        elif aggregation == "count":
            columns[f"count_{metric}"] = count
        elif aggregation == "avg":
            columns[f"avg_{metric}"] = (Decimal(total) / count).quantize(Decimal("0.00000001")) if count else None
        elif aggregation == "min":
            columns[f"min_{metric}"] = spread.min if spread else None
        elif aggregation == "max":
            columns[f"max_{metric}"] = spread.max if spread else None
    for q in spec["percentiles"]:
        columns[f"{_label(q)}_{metric}"] = spread.percentiles.get(q) if spread else None
    return columns


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
