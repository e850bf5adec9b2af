"""Venice dialect (seed 003): `GET /api/v1/billing/usage` (ledger entries, JSON or streamed CSV)
and `GET /api/v1/billing/usage-analytics` (breakdowns by date, model and key, cached 10 minutes).

The ledger is every usage event as a charge (negative) and every credit grant as a positive
entry, merged in time order. Amounts are in the account's currency; `pricePerUnitUsd` is given
only for USD accounts (the effective price per unit of the entry)."""

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from billing.ledger import UsageLedger
from billing.models import LedgerEntry, Model
from billing.money import Currency, from_units
from billing.selectors import account_currency
from portal.api.errors import ApiError
from portal.api.fields import InstantField, PageField
from portal.api.permissions import whole_collection
from portal.api.views import RamAPIView, parse_query
from portal.models import Organization
from usage.models import UsageEvent
from usage.query import combine_rows, for_organization
from usage.selectors import model_codes, objects_named_in
from usage.timebuckets import Bucket, Granularity, last_days, local_midnight_of


class VeniceDialect:
    """Venice: 400 {"error", "details": {field: {"_errors": [...]}}}; 401/403 {"error"}."""

    tag = "Venice"
    validation_status = 400

    @staticmethod
    def render(error: ApiError, request=None) -> Response:
        if error.problems:
            details: dict[str, dict[str, list[str]]] = {}
            for problem in error.problems:
                details.setdefault(str(problem.location[-1]), {"_errors": []})["_errors"].append(problem.message)
            return Response({"error": "Invalid request parameters", "details": details}, status=error.status)
        return Response({"error": error.message}, status=error.status)


_S = serializers
CSV_FIELDS = ["timestamp", "sku", "pricePerUnitUsd", "units", "amount", "currency", "notes",
              "inferenceDetails.requestId", "inferenceDetails.inferenceExecutionTime",
              "inferenceDetails.promptTokens", "inferenceDetails.completionTokens"]
ANALYTICS_CACHE_SECONDS = 600
TOP = 8
MTOKENS = Decimal(1_000_000)
NO_COST = from_units(0)
# What the analytics show of each model's and key's totals.
ANALYTICS_MEASURES = ("cost_units", "input_cost_units", "cache_read_cost_units", "output_cost_units", "prompt_tokens",
                      "completion_tokens", "cached_tokens", "image_count", "video_seconds")


class UsageParams(_S.Serializer):
    currency = _S.ChoiceField(choices=Currency.values, required=False, help_text=(
        "Only entries in this currency: the account's own (e.g. USD or CNY) or a credit unit (VCU, DIEM, "
        "BUNDLED_CREDITS); every amount is kept in the account's currency, so another currency finds none."))
    format = _S.ChoiceField(choices=["json", "csv"], required=False, help_text=(
        "`csv` streams every entry of the range as CSV, exactly as `Accept: text/csv` does."))
    startDate = InstantField(required=False)  # noqa: N815 - the vendor's spelling
    endDate = InstantField(required=False)  # noqa: N815
    limit = _S.IntegerField(required=False, default=200, min_value=1, max_value=500)
    page = PageField(required=False, default=1)
    sortOrder = _S.ChoiceField(choices=["asc", "desc"], required=False, default="desc")  # noqa: N815

    def validate(self, attrs):
        if "startDate" in attrs and "endDate" in attrs and attrs["endDate"] <= attrs["startDate"]:
            raise _S.ValidationError({"endDate": "must be after startDate"})
        return attrs


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sku(model: Model) -> str:
    return f"{model.code}-{model.modality}"


def _units(event: UsageEvent) -> Decimal:
    if event.model.modality in (Model.Modality.IMAGE,):
        return Decimal(event.image_count)
    if event.model.modality == Model.Modality.VIDEO:
        return Decimal(event.video_seconds)
    return Decimal(event.prompt_tokens + event.completion_tokens) / MTOKENS  # millions of tokens


def charge_entry(event: UsageEvent) -> dict[str, Any]:
    units = _units(event)
    unit_price = (event.cost / units).quantize(Decimal("0.00000001")) if units else None
    return {
        "timestamp": _iso(event.timestamp), "sku": _sku(event.model),
        "pricePerUnitUsd": unit_price if event.currency == Currency.USD else None,
        "units": units, "amount": -event.cost, "currency": event.currency,
        "notes": f"{event.model.code} via key {event.key.name}",
        "inferenceDetails": {"requestId": event.request_id, "inferenceExecutionTime": event.latency_ms,
                             "promptTokens": event.prompt_tokens, "completionTokens": event.completion_tokens},
    }


def credit_entry(entry: LedgerEntry) -> dict[str, Any]:
    """Any movement but usage: top-ups and grants (positive), expiries, credit notes, payments."""
    return {"timestamp": _iso(entry.created_at), "sku": f"credit-{entry.kind}", "pricePerUnitUsd": None,
            "units": Decimal(1), "amount": entry.amount, "currency": entry.currency,
            "notes": entry.note or entry.get_kind_display(), "inferenceDetails": None}


def ledger_entry(item: UsageEvent | LedgerEntry) -> dict[str, Any]:
    return credit_entry(item) if isinstance(item, LedgerEntry) else charge_entry(item)


def _flatten(entry: dict[str, Any]) -> list[Any]:
    details = entry["inferenceDetails"] or {}
    return [entry["timestamp"], entry["sku"], entry["pricePerUnitUsd"] if entry["pricePerUnitUsd"] is not None else "",
            entry["units"], entry["amount"], entry["currency"], entry["notes"], details.get("requestId", ""),
            details.get("inferenceExecutionTime", ""), details.get("promptTokens", ""),
            details.get("completionTokens", "")]


def _csv_lines(entries: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_FIELDS)
    for entry in entries:
        writer.writerow(_flatten(entry))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _wants_csv(request, params: dict[str, Any]) -> bool:
    """CSV by `?format=csv` or by `Accept: text/csv` (first choice): the same bytes either way."""
    if "format" in params:
        return params["format"] == "csv"
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0].split(";")[0].strip().lower()
    return first == "text/csv"


LedgerEntryShape = inline_serializer("BillingUsageEntry", {
    "timestamp": _S.DateTimeField(), "sku": _S.CharField(), "pricePerUnitUsd": _S.FloatField(allow_null=True),
    "units": _S.FloatField(), "amount": _S.FloatField(), "currency": _S.CharField(), "notes": _S.CharField(),
    "inferenceDetails": inline_serializer("InferenceDetails", {
        "requestId": _S.CharField(), "inferenceExecutionTime": _S.IntegerField(), "promptTokens": _S.IntegerField(),
        "completionTokens": _S.IntegerField()}, allow_null=True)}, many=True)
class VeniceError(_S.Serializer):
    error = _S.CharField()


VENICE_ERRORS = {
    400: inline_serializer("VeniceValidationError", {"error": _S.CharField(), "details": _S.DictField()}),
    401: VeniceError, 403: VeniceError,
}
ANALYTICS_RESPONSE = inline_serializer("UsageAnalytics", {
    "lookback": _S.CharField(allow_null=True), "currency": _S.CharField(), "startDate": _S.DateTimeField(),
    "endDate": _S.DateTimeField(),
    "byDate": inline_serializer("AnalyticsByDate", {"date": _S.DateField(), "totalUsd": _S.FloatField(),
                                                    "totalUnits": _S.IntegerField()}, many=True),
    "byModel": inline_serializer("AnalyticsByModel", {
        "modelId": _S.CharField(), "totalUsd": _S.FloatField(), "totalUnits": _S.IntegerField(),
        "breakdown": _S.DictField(help_text="Input, Output and Cache Read, each {totalUsd, units}")}, many=True),
    "byModelDaily": _S.ListField(child=_S.DictField()), "topModels": _S.ListField(child=_S.CharField()),
    "byKey": inline_serializer("AnalyticsByKey", {"apiKeyId": _S.UUIDField(), "description": _S.CharField(),
                                                  "totalUsd": _S.FloatField(), "totalUnits": _S.IntegerField()},
                               many=True),
    "byKeyDaily": _S.ListField(child=_S.DictField()), "topKeyNames": _S.ListField(child=_S.CharField())})


class CSVRenderer(BaseRenderer):
    """Lets content negotiation accept `text/csv`; the view streams the CSV itself."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        # The view streams CSV itself and answers errors in JSON; anything else is written as JSON.
        return json.dumps(data, default=str).encode()


class BillingUsageView(RamAPIView):
    ram_actions = {"GET": "billing:ListBillingUsage"}
    ram_resource = whole_collection
    dialect = VeniceDialect
    renderer_classes = [JSONRenderer, CSVRenderer]

    def handle_exception(self, exc):
        # Errors are Venice's JSON shape even when the caller asked for CSV.
        self._answer_in_json()
        return super().handle_exception(exc)

    def _answer_in_json(self) -> None:
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"

    @extend_schema(parameters=[UsageParams, OpenApiParameter("Accept", str, OpenApiParameter.HEADER, description=(
                       "application/json (the default) or text/csv; a type matching neither is 406"))],
                   responses={200: inline_serializer("BillingUsageResponse", {
                       "data": LedgerEntryShape, "pagination": inline_serializer("Pagination", {
                           "limit": _S.IntegerField(), "page": _S.IntegerField(), "total": _S.IntegerField(),
                           "totalPages": _S.IntegerField()})}), **VENICE_ERRORS},
                   description="JSON pages, or with `Accept: text/csv` every entry of the range streamed as CSV.")
    def get(self, request):
        params = parse_query(UsageParams, request)
        organization = request.organization
        ledger = UsageLedger(organization, start=params.get("startDate"), end=params.get("endDate"),
                             currency=params.get("currency"), descending=params["sortOrder"] == "desc")
        if _wants_csv(request, params):
            response = StreamingHttpResponse(_csv_lines(map(ledger_entry, ledger.stream())), content_type="text/csv")
            response["Content-Disposition"] = "attachment; filename=billing_usage.csv"
            return response
        self._answer_in_json()  # `?format=json` wins over `Accept: text/csv`
        total = ledger.total()
        limit, page = params["limit"], params["page"]
        pages = math.ceil(total / limit) if total else 0
        response = Response({"data": [ledger_entry(item) for item in ledger.page((page - 1) * limit, limit)],
                             "pagination": {"limit": limit, "page": page, "total": total, "totalPages": pages}})
        response["x-pagination-limit"], response["x-pagination-page"] = str(limit), str(page)
        response["x-pagination-total"], response["x-pagination-total-pages"] = str(total), str(pages)
        return response


# --- analytics -----------------------------------------------------------------------------

class AnalyticsParams(_S.Serializer):
    lookback = _S.RegexField(r"^([1-9]|[1-8][0-9]|90)d$", required=False, help_text="1d to 90d")
    startDate = InstantField(required=False)  # noqa: N815
    endDate = InstantField(required=False)  # noqa: N815

    def validate_lookback(self, value: str) -> int:
        days = int(value[:-1])
        if not 1 <= days <= 90:
            raise _S.ValidationError("lookback must be between 1d and 90d")
        return days

    def validate(self, attrs):
        dates = ("startDate" in attrs) + ("endDate" in attrs)
        if dates == 1:
            raise _S.ValidationError({"endDate" if "startDate" in attrs else "startDate": "give both dates"})
        if dates and "lookback" in attrs:
            raise _S.ValidationError({"lookback": "give lookback or dates, not both"})
        if dates and attrs["endDate"] <= attrs["startDate"]:
            raise _S.ValidationError({"endDate": "must be after startDate"})
        if dates and attrs["endDate"] - attrs["startDate"] > timedelta(days=90):
            raise _S.ValidationError({"endDate": "at most 90 days after startDate"})
        return attrs


class UsageAnalyticsView(RamAPIView):
    ram_actions = {"GET": "billing:GetUsageAnalytics"}
    ram_resource = whole_collection
    dialect = VeniceDialect

    @extend_schema(parameters=[AnalyticsParams], responses={200: ANALYTICS_RESPONSE, **VENICE_ERRORS})
    def get(self, request):
        params = parse_query(AnalyticsParams, request)
        organization = request.organization
        fingerprint = hashlib.sha256(json.dumps(sorted(request.query_params.items())).encode()).hexdigest()[:24]
        cache_key = f"venice:analytics:{organization.pk}:{fingerprint}"
        body = cache.get(cache_key)
        if body is None:
            body = analytics(organization, params)
            cache.set(cache_key, body, ANALYTICS_CACHE_SECONDS)
        return Response(body)


def analytics(organization: Organization, params: dict[str, Any]) -> dict[str, Any]:
    if "startDate" in params:
        start, end, lookback = params["startDate"], params["endDate"], None
        # Whole local days covering the dates, so that byDate rows are complete days.
        zone = organization.zone
        start = local_midnight_of(start.astimezone(zone).date(), zone)
        end = local_midnight_of((end - timedelta(microseconds=1)).astimezone(zone).date() + timedelta(days=1), zone)
    else:
        days = params.get("lookback", 7)
        start, end = last_days(organization.zone, days, timezone.now())
        lookback = f"{days}d"
    usage, day = for_organization(organization), Granularity.of("day")
    daily = usage.run(start, end, granularity=day).rows
    # Each breakdown is read once, per day and with only the groups that have usage; its totals
    # are those days added up (the per-key days come from the key-daily level).
    by_model_daily = usage.run(start, end, granularity=day, group_by=("model",), fill_empty=False)
    by_key_daily = usage.run(start, end, granularity=day, group_by=("key",), fill_empty=False)
    whole_range = Bucket(0, start, end)
    by_model = [r for r in combine_rows(by_model_daily.rows, whole_range, ("model",), ANALYTICS_MEASURES) if r.requests]
    by_key = [r for r in combine_rows(by_key_daily.rows, whole_range, ("key",), ANALYTICS_MEASURES) if r.requests]
    codes = model_codes()
    keys = objects_named_in(by_key, "key")["key"]
    by_model.sort(key=lambda r: (-r.cost_units, codes[r.group["model"]]))
    by_key.sort(key=lambda r: (-r.cost_units, keys[r.group["key"]].name))
    top_models = [codes[r.group["model"]] for r in by_model[:TOP]]
    top_keys = [r.group["key"] for r in by_key[:TOP]]

    def units(row) -> int:
        return row.total_tokens + row.image_count + row.video_seconds

    def per_day(result, name, label, wanted):
        # Every day of the range, each wanted group's cost that day (zero on a day without usage).
        costs = {(row.bucket.key, row.group[name]): row.cost for row in result.rows if row.group[name] in wanted}
        return [{"date": bucket.start.date().isoformat(),
                 "values": {label(pk): costs.get((bucket.key, pk), NO_COST) for pk in sorted(wanted)}}
                for bucket in result.buckets]

    return {
        "lookback": lookback, "currency": account_currency(organization),
        "startDate": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "endDate": end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "byDate": [{"date": row.bucket.start.date().isoformat(), "totalUsd": row.cost, "totalUnits": units(row)}
                   for row in daily],
        "byModel": [{"modelId": codes[r.group["model"]], "totalUsd": r.cost, "totalUnits": units(r),
                     "breakdown": {"Input": {"totalUsd": r.input_cost, "units": r.prompt_tokens - r.cached_tokens},
                                   "Output": {"totalUsd": r.output_cost, "units": r.completion_tokens},
                                   "Cache Read": {"totalUsd": r.cache_read_cost, "units": r.cached_tokens}}}
                    for r in by_model],
        "byModelDaily": per_day(by_model_daily, "model", lambda pk: codes[pk],
                                {r.group["model"] for r in by_model[:TOP]}),
        "topModels": top_models,
        "byKey": [{"apiKeyId": str(keys[r.group["key"]].uuid), "description": keys[r.group["key"]].name,
                   "totalUsd": r.cost, "totalUnits": units(r)} for r in by_key],
        "byKeyDaily": per_day(by_key_daily, "key", lambda pk: str(keys[pk].uuid) if pk in keys else str(pk),
                              set(top_keys)),
        "topKeyNames": [keys[pk].name for pk in top_keys],
    }


