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
from drf_spectacular.utils import extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from portal.api.errors import AIoneDialect, FieldProblem, InvalidRequest
from portal.api.fields import InstantField
from portal.api.permissions import RamTarget
from portal.api.schema import AIONE_ERRORS
from portal.api.views import RamAPIView, parse_body
from portal.models import Department, Member
from usage.measures import EVENT_VALUE_NAMED
from usage.query import Distribution, Result, Row, for_organization
from usage.selectors import model_codes
from usage.timebuckets import Granularity


class WeaveDialect(AIoneDialect):
    """Weave answers in FastAPI's shapes too."""

    tag = "Weave"


_S = serializers
# Weave's AggregationType, in its order (weave 0.54's CallStatsParams).
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "count_true", "count_false")
DEFAULT_AGGREGATIONS = ("sum",)
# Weave's metrics (its UsageMetric and CallMetric literals) -> the per-event value of the engine
# (usage.measures.EVENT_VALUES) each one aggregates.
USAGE_METRICS = {
    "input_tokens": "prompt_tokens",
    "output_tokens": "completion_tokens",
    "total_tokens": "total_tokens",
    "cache_read_input_tokens": "cached_tokens",
    "cache_creation_input_tokens": "cache_creation_tokens",
    "input_cost": "input_cost",  # every prompt token's cost: uncached, cache reads and cache writes
    "output_cost": "output_cost",
    "total_cost": "cost",
}
CALL_METRICS = {"latency_ms": "latency_ms", "call_count": "requests", "error_count": "errors"}
AGGREGATIONS_HELP = (
    "Aggregations over the bucket's calls, each a column `<aggregation>_<metric>`; `[\"sum\"]` when omitted "
    "or null, and also when both this and `percentiles` are empty (as Weave's server does). `count` counts "
    "the calls; `count_true` counts the calls whose value is true, that is non-zero (for `error_count`, the "
    "failed calls; for `call_count`, every call), and `count_false` those whose value is false (zero), as "
    "Weave counts booleans stored as 1 and 0. Sums and counts are 0 in an empty bucket; avg, min and max "
    "null.")
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
    aggregations = _S.ListField(child=_S.ChoiceField(choices=AGGREGATIONS), required=False,
                                default=DEFAULT_AGGREGATIONS, help_text=AGGREGATIONS_HELP)
    percentiles = _S.ListField(
        child=_S.FloatField(min_value=0, max_value=100), required=False, default=(),
        help_text="Percentiles 0-100, each a column `p<N>_<metric>` (N as Weave writes it: `p50`, `p99.9`), "
                  "computed as PostgreSQL's percentile_cont (linear between the two values around rank "
                  "(n - 1) * p / 100); latency percentiles come from histograms, within 2 %. Null in an empty "
                  "bucket.")

    def validate(self, attrs):
        # Weave's server asks for the sum of a metric given neither aggregations nor percentiles.
        if not attrs["aggregations"] and not attrs["percentiles"]:
            attrs["aggregations"] = DEFAULT_AGGREGATIONS
        return attrs


class UsageMetricSpec(MetricSpec):
    """A usage metric to aggregate, per bucket and model (Weave's UsageMetricSpec). Tokens count the
    prompt (`input_tokens`, of which `cache_read_input_tokens` were read from and
    `cache_creation_input_tokens` written to a prompt cache) and the completion (`output_tokens`);
    costs are in the account's currency, `input_cost` being every prompt token's."""

    metric = _S.ChoiceField(choices=sorted(USAGE_METRICS))


class CallMetricSpec(MetricSpec):
    """A call metric to aggregate, per bucket over every model (Weave's CallMetricSpec): a call's
    `latency_ms`, `call_count` (1 per call) and `error_count` (1 for a call answered 4xx or 5xx)."""

    metric = _S.ChoiceField(choices=sorted(CALL_METRICS))


def _strings() -> _S.ListField:
    return _S.ListField(child=_S.CharField(max_length=128), required=False, default=list)


class CallsFilter(StrictSerializer):
    """Weave's CallsFilter: calls are gateway requests, `call_ids` their request ids, `wb_user_ids`
    members' uuids and `wb_run_ids` conversation ids; no request carries object refs, so
    `input_refs` and `output_refs` match nothing."""

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


@extend_schema_serializer(component_name="CallStats")
class CallsStatsRequest(StrictSerializer):
    """Weave's CallStatsReq. Unknown fields are refused (422); a null for any optional field, at any
    depth, means the field was not given."""

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


_COLUMNS_HELP = ("Besides these, one column per aggregation and percentile asked for: `<aggregation>_<metric>` "
                 "and `p<N>_<metric>` (numbers, or null for avg, min, max and percentiles of an empty bucket).")
UsageBucket = inline_serializer("CallsStatsUsageBucket", {
    "timestamp": _S.DateTimeField(help_text="The bucket's start, ISO 8601 with the zone's offset"),
    "model": _S.CharField(help_text="The model's code"),
    "count": _S.IntegerField(help_text="The model's calls in the bucket")}, help_text=_COLUMNS_HELP)
CallBucket = inline_serializer("CallsStatsCallBucket", {
    "timestamp": _S.DateTimeField(help_text="The bucket's start, ISO 8601 with the zone's offset"),
    "count": _S.IntegerField(help_text="The calls in the bucket")}, help_text=_COLUMNS_HELP)
StatsResponse = inline_serializer("CallsStatsResponse", {
    "start": _S.DateTimeField(help_text="Resolved start (UTC)"),
    "end": _S.DateTimeField(help_text="Resolved end (UTC): the request's, or now"),
    "granularity": _S.IntegerField(help_text="Bucket size used, in seconds"),
    "timezone": _S.CharField(help_text="Time zone of bucket alignment"),
    "usage_buckets": _S.ListField(child=UsageBucket, help_text=(
        "One per bucket and model with calls in the range (every bucket, empty ones too); empty when no "
        "usage metric was asked for")),
    "call_buckets": _S.ListField(child=CallBucket, help_text=(
        "One per bucket (every bucket, empty ones too); empty when no call metric was asked for"))})


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
    """A percentile's column prefix, written as Weave writes it (`p50`, `p99.9`)."""
    return f"p{int(percentile)}" if percentile == int(percentile) else f"p{percentile}"


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
        distributions = tuple((USAGE_METRICS[m["metric"]], tuple(m["percentiles"])) for m in metrics
                              if m["percentiles"] or {"min", "max"} & set(m["aggregations"]))
        result = usage(group_by=("model",), distributions=_merge(distributions),
                       true_counts=_true_counts(metrics, USAGE_METRICS))
        codes = model_codes()
        buckets = []
        for row in result.rows:
            bucket = {"timestamp": row.bucket.start.isoformat(), "model": codes.get(row.group["model"]),
                      "count": row.requests}
            for spec in metrics:
                value = USAGE_METRICS[spec["metric"]]
                bucket.update(_columns(spec, row, value, row.distributions.get(value)))
            buckets.append(bucket)
        return buckets

    def _calls(self, usage: Callable[..., Result], metrics: list[dict]) -> list[dict]:
        if not metrics:
            return []
        # Latency's smallest, largest and percentiles come from the rollups (its histograms), and a
        # call's count is 1: only the error flag's are read per event.
        latency_percentiles = tuple(p for m in metrics if m["metric"] == "latency_ms" for p in m["percentiles"])
        distributions = tuple((CALL_METRICS[m["metric"]], tuple(m["percentiles"])) for m in metrics
                              if m["metric"] == "error_count"
                              and (m["percentiles"] or {"min", "max"} & set(m["aggregations"])))
        result = usage(percentiles=tuple(dict.fromkeys(latency_percentiles)), distributions=_merge(distributions),
                       true_counts=_true_counts(metrics, CALL_METRICS))
        buckets = []
        for row in result.rows:
            bucket: dict[str, Any] = {"timestamp": row.bucket.start.isoformat(), "count": row.requests}
            for spec in metrics:
                value = CALL_METRICS[spec["metric"]]
                if spec["metric"] == "latency_ms":
                    spread = Distribution(row.latency_min_ms, row.latency_max_ms,
                                          {q: _round(row.percentiles.get(q)) for q in spec["percentiles"]})
                elif spec["metric"] == "call_count":
                    one = 1 if row.requests else None
                    spread = Distribution(one, one, {q: one for q in spec["percentiles"]})
                else:
                    spread = row.distributions.get(value)
                bucket.update(_columns(spec, row, value, spread))
            buckets.append(bucket)
        return buckets


def _true_counts(metrics: list[dict], values: dict[str, str]) -> tuple[str, ...]:
    """The engine's values whose non-zero events the metrics count (count_true, count_false)."""
    return tuple(dict.fromkeys(values[m["metric"]] for m in metrics
                               if {"count_true", "count_false"} & set(m["aggregations"])))


def _merge(distributions):
    merged: dict[str, list[float]] = {}
    for name, qs in distributions:
        merged.setdefault(name, [])
        merged[name] += [q for q in qs if q not in merged[name]]
    return tuple((name, tuple(qs)) for name, qs in merged.items())


def _round(value):
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.001"))


def _columns(spec: dict, row: Row, value: str, spread: Distribution | None) -> dict[str, Any]:
    """One metric's columns in a bucket: `value` (usage.measures.EVENT_VALUES) over the row's calls."""
    metric = spec["metric"]
    total, count = getattr(row, EVENT_VALUE_NAMED[value].total), row.requests
    columns: dict[str, Any] = {}
    for aggregation in spec["aggregations"]:
        if aggregation == "sum":
            columns[f"sum_{metric}"] = total
        elif aggregation == "count":
            columns[f"count_{metric}"] = count
        elif aggregation == "count_true":
            columns[f"count_true_{metric}"] = row.true_counts[value]
        elif aggregation == "count_false":
            columns[f"count_false_{metric}"] = row.false_count(value)
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
