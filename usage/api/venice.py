"""Venice dialect (seed 003): `GET /api/v1/billing/usage` (ledger entries by page number, JSON or
streamed CSV), `GET /api/v1/billing/usage-history` (the same entries, oldest first, in keyset pages
behind a cursor), `GET /api/v1/billing/balance`, and `GET /api/v1/billing/usage-analytics`
(breakdowns by date, model and key, cached 10 minutes).

The ledger is every usage event as a charge (negative) and every credit grant as a positive
entry, merged in time order. Amounts are in the account's currency; `pricePerUnitUsd` is the
effective USD price per unit on a USD account's charges and 0 everywhere else, because Venice's
clients (venice-py, pyvenice) require a number there."""

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core import signing
from django.core.cache import cache
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from billing.ledger import END_OF_TIME, EPOCH, LedgerItem, LedgerPosition, UsageLedger
from billing.models import LedgerEntry, Model
from billing.money import Currency, from_units
from billing.selectors import account_balance, account_currency
from portal.api.errors import ApiError, FieldProblem, InvalidRequest
from portal.api.fields import InstantField, PageField
from portal.api.permissions import whole_collection
from portal.api.views import RamAPIView, parse_query
from portal.models import Organization
from usage.models import UsageEvent
from usage.query import combine_rows, for_organization
from usage.selectors import objects_named_in
from usage.timebuckets import (
    Bucket,
    Granularity,
    OutOfRange,
    checked_day,
    checked_instant,
    last_days,
    local_midnight_of,
)


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
ANALYTICS_MEASURES = ("cost_units", "input_cost_units", "cache_read_cost_units", "cache_write_cost_units",
                      "output_cost_units", "prompt_tokens", "completion_tokens", "cached_tokens",
                      "cache_creation_tokens", "image_count", "video_seconds")


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
    # Venice's clients require a number here: 0 when there is no USD price per unit (another
    # currency, or no units to divide by).
    unit_price = NO_COST
    if units and event.currency == Currency.USD:
        unit_price = (event.cost / units).quantize(Decimal("0.00000001"))
    return {
        "timestamp": _iso(event.timestamp), "sku": _sku(event.model), "pricePerUnitUsd": unit_price,
        "units": units, "amount": -event.cost, "currency": event.currency,
        "notes": f"{event.model.code} via key {event.key.name}",
        "inferenceDetails": {"requestId": event.request_id, "inferenceExecutionTime": event.latency_ms,
                             "promptTokens": event.prompt_tokens, "completionTokens": event.completion_tokens},
    }


def credit_entry(entry: LedgerEntry) -> dict[str, Any]:
    """Any movement but usage: top-ups and grants (positive), expiries, credit notes, payments."""
    return {"timestamp": _iso(entry.created_at), "sku": f"credit-{entry.kind}", "pricePerUnitUsd": NO_COST,
            "units": Decimal(1), "amount": entry.amount, "currency": entry.currency,
            "notes": entry.note or entry.get_kind_display(), "inferenceDetails": None}


def ledger_entry(item: UsageEvent | LedgerEntry) -> dict[str, Any]:
    return credit_entry(item) if isinstance(item, LedgerEntry) else charge_entry(item)


def _cell(value: Any) -> Any:
    # Decimals in plain notation: str() would write a one-unit cost as "1E-8".
    return format(value, "f") if isinstance(value, Decimal) else value


def _flatten(entry: dict[str, Any], fields: list[str]) -> list[Any]:
    details = entry["inferenceDetails"] or {}
    return [_cell(details.get(name.removeprefix("inferenceDetails."), "") if name.startswith("inferenceDetails.")
                  else entry[name]) for name in fields]


def _csv_lines(entries: Iterator[dict[str, Any]], fields: list[str] = CSV_FIELDS) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(fields)
    for entry in entries:
        writer.writerow(_flatten(entry, fields))
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


# One class, so that both ledgers' entries name the same schema component.
InferenceDetailsShape = type(inline_serializer("InferenceDetails", {
    "requestId": _S.CharField(), "inferenceExecutionTime": _S.IntegerField(), "promptTokens": _S.IntegerField(),
    "completionTokens": _S.IntegerField()}))


def _ledger_entry_fields() -> dict[str, _S.Field]:
    return {
        "timestamp": _S.DateTimeField(), "sku": _S.CharField(), "pricePerUnitUsd": _S.FloatField(
            help_text="The USD price of one unit; 0 where the entry has none (credits, no units, another currency)"),
        "units": _S.FloatField(), "amount": _S.FloatField(help_text="Negative for a charge, positive for a credit"),
        "currency": _S.CharField(help_text="The account's currency (e.g. USD or CNY)"), "notes": _S.CharField(),
        "inferenceDetails": InferenceDetailsShape(allow_null=True)}


LedgerEntryShape = inline_serializer("BillingUsageEntry", _ledger_entry_fields(), many=True)


class VeniceError(_S.Serializer):
    error = _S.CharField()


VENICE_ERRORS = {
    400: inline_serializer("VeniceValidationError", {"error": _S.CharField(), "details": _S.DictField()}),
    401: VeniceError, 403: VeniceError,
}
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
#
# Venice's own field names, so that venice-py's UsageAnalyticsResponse parses the answer. Venice
# spends in USD and DIEM and names each amount after its currency: `USD`/`DIEM` on a day,
# `totalUsd`/`totalDiem` on a model or key, `usd`/`diem` in a breakdown, the daily series
# `byModelDaily` (DIEM) and `byModelDailyUsd`. Every amount of an organization is kept in its
# account's currency: that currency's places carry the amounts, the others 0 (nothing was spent
# in them). An account in another currency (CNY) gets places named by the same pattern
# (`CNY`, `totalCny`, `cny`, `byModelDailyCny`), beside USD's and DIEM's at 0, which the
# clients' models require.

VENICE_CURRENCIES = (Currency.USD, Currency.DIEM)


@dataclass(frozen=True)
class AmountNames:
    """Where one currency's amounts go in Venice's analytics."""

    currency: str

    @property
    def on_day(self) -> str:  # byDate[].USD
        return self.currency

    @property
    def total(self) -> str:  # byModel[].totalUsd, byKey[].totalUsd
        return "total" + self.currency.capitalize()

    @property
    def in_breakdown(self) -> str:  # byModel[].breakdown[].usd
        return self.currency.lower()

    @property
    def series_suffix(self) -> str:  # byModelDaily (DIEM, Venice's first unit), byModelDailyUsd
        return "" if self.currency == Currency.DIEM else self.currency.capitalize()


def amount_names(account_currency_code: str) -> list[AmountNames]:
    codes = list(VENICE_CURRENCIES) + ([account_currency_code] if account_currency_code not in VENICE_CURRENCIES
                                       else [])
    return [AmountNames(code) for code in codes]


# A model's spend by kind of unit, in Venice's breakdown order: (type, amount on the row, units
# on the row). Input is the prompt tokens neither read from nor written to a cache, so that the
# four add up to the model's total.
TOKEN_BREAKDOWN = (
    ("Input", lambda row: row.input_cost,
     lambda row: row.prompt_tokens - row.cached_tokens - row.cache_creation_tokens),
    ("Output", lambda row: row.output_cost, lambda row: row.completion_tokens),
    ("Cache Read", lambda row: row.cache_read_cost, lambda row: row.cached_tokens),
    ("Cache Write", lambda row: row.cache_write_cost, lambda row: row.cache_creation_tokens),
)
# Venice's unitType per modality: what a model's totalUnits counts.
UNIT_TYPES = {Model.Modality.IMAGE: "images", Model.Modality.VIDEO: "seconds"}



@extend_schema_field({"type": "string", "example": "2026-01-31"})
class DayOrInstantField(_S.Field):
    """`YYYY-MM-DD` (a local day of the organization, as venice-py sends it) or an ISO 8601
    instant with its offset."""

    default_error_messages = {"invalid": "give a date (YYYY-MM-DD) or an ISO 8601 date-time"}

    def to_internal_value(self, value: Any) -> date | datetime:
        text = str(value).strip()
        try:
            parsed: date | datetime = date.fromisoformat(text) if len(text) == 10 else _S.DateTimeField(
                default_timezone=UTC).to_internal_value(text)
        except (ValueError, _S.ValidationError):
            self.fail("invalid")
        # The platform's one range rule (usage.timebuckets), as every other time a caller names.
        try:
            return checked_instant(parsed) if isinstance(parsed, datetime) else checked_day(parsed)
        except OutOfRange as error:
            raise _S.ValidationError(str(error)) from error


class AnalyticsParams(_S.Serializer):
    lookback = _S.RegexField(r"^([1-9]|[1-8][0-9]|90)d$", required=False, help_text="`Nd`, 1d to 90d (default 7d)")
    startDate = DayOrInstantField(required=False, help_text=(  # noqa: N815 - the vendor's spelling
        "First day, `YYYY-MM-DD` in the organization's timezone (or an ISO 8601 instant: its local day)"))
    endDate = DayOrInstantField(required=False, help_text=(  # noqa: N815
        "Last day, included, `YYYY-MM-DD` (or an ISO 8601 instant, excluded: up to its local day's end)"))

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
        if not dates:
            return attrs
        start, end = attrs["startDate"], attrs["endDate"]
        if isinstance(start, datetime) != isinstance(end, datetime):
            raise _S.ValidationError({"endDate": "give both dates as days or both as date-times"})
        if isinstance(start, datetime):
            if end <= start:
                raise _S.ValidationError({"endDate": "must be after startDate"})
            if end - start > timedelta(days=90):
                raise _S.ValidationError({"endDate": "at most 90 days after startDate"})
        else:
            if end < start:
                raise _S.ValidationError({"endDate": "must be on or after startDate"})
            if (end - start).days >= 90:
                raise _S.ValidationError({"endDate": "at most 90 days, both dates included"})
        return attrs


def _amount_field(help_text: str = "") -> _S.FloatField:
    return _S.FloatField(help_text=help_text)


ANALYTICS_AMOUNT_NOTE = ("Amounts are in the account's currency (`currency`): its own places carry them "
                         "(`USD`/`totalUsd`/`usd` for a USD account; `CNY`/`totalCny`/`cny` and "
                         "`byModelDailyCny` for a CNY one) and the places of Venice's other units are 0.")
ANALYTICS_RESPONSE = inline_serializer("UsageAnalytics", {
    "lookback": _S.CharField(help_text="`Nd`, or `startDate:endDate` exactly as given"),
    "currency": _S.CharField(help_text="The account's currency"),
    "startDate": _S.DateTimeField(help_text="First instant covered (a local midnight)"),
    "endDate": _S.DateTimeField(help_text="End of the range, excluded (a local midnight)"),
    "byDate": inline_serializer("AnalyticsByDate", {
        "date": _S.DateField(help_text="A local day of the organization"),
        "USD": _amount_field(), "DIEM": _amount_field()}, many=True),
    "byModel": inline_serializer("AnalyticsByModel", {
        "modelId": _S.CharField(help_text="The model's code"), "modelName": _S.CharField(),
        "modelType": _S.ChoiceField(choices=[m.upper() for m in Model.Modality.values]),
        "unitType": _S.ChoiceField(choices=["tokens", "images", "seconds"]),
        "totalUsd": _amount_field(), "totalDiem": _amount_field(), "totalUnits": _S.IntegerField(),
        "breakdown": inline_serializer("AnalyticsModelBreakdown", {
            "type": _S.ChoiceField(choices=[kind for kind, _, _ in TOKEN_BREAKDOWN]),
            "usd": _amount_field(), "diem": _amount_field(), "units": _S.IntegerField()},
            many=True, allow_null=True, help_text="Token models only: spend and tokens per kind")}, many=True),
    "byModelDaily": _S.ListField(child=_S.DictField(), help_text=(
        "Every day: `date` (epoch milliseconds of the local midnight) and each top model's DIEM spend by name")),
    "byModelDailyUsd": _S.ListField(child=_S.DictField(), help_text="The same in USD"),
    "topModels": _S.ListField(child=_S.CharField(), help_text="The top 8 models' names"),
    "byKey": inline_serializer("AnalyticsByKey", {
        "apiKeyId": _S.UUIDField(), "description": _S.CharField(help_text="The key's name"),
        "totalUsd": _amount_field(), "totalDiem": _amount_field(), "totalUnits": _S.IntegerField()}, many=True),
    "byKeyDaily": _S.ListField(child=_S.DictField(), help_text=(
        "Every day: `date` (epoch milliseconds) and each top key's DIEM spend by name")),
    "byKeyDailyUsd": _S.ListField(child=_S.DictField(), help_text="The same in USD"),
    "topKeyNames": _S.ListField(child=_S.CharField(), help_text="The top 8 keys' names"),
})


class UsageAnalyticsView(RamAPIView):
    ram_actions = {"GET": "billing:GetUsageAnalytics"}
    ram_resource = whole_collection
    dialect = VeniceDialect

    @extend_schema(parameters=[AnalyticsParams], responses={200: ANALYTICS_RESPONSE, **VENICE_ERRORS},
                   description="Cached 10 minutes per organization and query. " + ANALYTICS_AMOUNT_NOTE)
    def get(self, request):
        params = parse_query(AnalyticsParams, request)
        organization = request.organization
        fingerprint = hashlib.sha256(json.dumps(sorted(request.query_params.items())).encode()).hexdigest()[:24]
        # v2: Venice's own field names (issue 14); a v1 body cached before a deploy is never served.
        cache_key = f"venice:analytics:v2:{organization.pk}:{fingerprint}"
        body = cache.get(cache_key)
        if body is None:
            if "startDate" in params:
                params["label"] = f"{request.query_params['startDate']}:{request.query_params['endDate']}"
            body = analytics(organization, params)
            cache.set(cache_key, body, ANALYTICS_CACHE_SECONDS)
        return Response(body)


def _analytics_range(organization: Organization, params: dict[str, Any]) -> tuple[datetime, datetime, str]:
    """[start, end) in whole local days, and the `lookback` to echo."""
    zone = organization.zone
    if "startDate" not in params:
        days = params.get("lookback", 7)
        start, end = last_days(zone, days, timezone.now())
        return start, end, f"{days}d"
    first, last = params["startDate"], params["endDate"]
    if isinstance(first, datetime):
        # Whole local days covering the instants, so that byDate rows are complete days.
        first, last = first.astimezone(zone).date(), (last - timedelta(microseconds=1)).astimezone(zone).date()
    return local_midnight_of(first, zone), local_midnight_of(last + timedelta(days=1), zone), params["label"]


def _unique_labels(names: dict[int, str]) -> dict[int, str]:
    """Names as the daily series' keys: a name two objects share gets a number, so that neither
    object's values overwrite the other's."""
    seen: dict[str, int] = {}
    labels = {}
    for pk, name in names.items():
        seen[name] = seen.get(name, 0) + 1
        labels[pk] = name if seen[name] == 1 else f"{name} ({seen[name]})"
    return labels


def analytics(organization: Organization, params: dict[str, Any]) -> dict[str, Any]:
    start, end, lookback = _analytics_range(organization, params)
    currency = account_currency(organization)
    names = amount_names(currency)

    def amounts(place: str, value: Decimal) -> dict[str, Decimal]:
        return {getattr(n, place): value if n.currency == currency else NO_COST for n in names}

    usage, day = for_organization(organization), Granularity.of("day")
    daily = usage.run(start, end, granularity=day).rows
    # Each breakdown is read once, per day and with only the groups that have usage; its totals
    # are those days added up (the per-key days come from the key-daily level).
    by_model_daily = usage.run(start, end, granularity=day, group_by=("model",), fill_empty=False)
    whole_range = Bucket(0, start, end)
    by_model = [r for r in combine_rows(by_model_daily.rows, whole_range, ("model",), ANALYTICS_MEASURES) if r.requests]
    # Keys are many (10,017 key-days in 30 days of the 10 M benchmark's heaviest organization,
    # 144 ms of Python as rows): their totals are read once for the whole range, and their days
    # only for the top keys the daily series show.
    by_key = [r for r in usage.run(start, end, group_by=("key",), fill_empty=False).rows if r.requests]
    named = objects_named_in(by_model + by_key, "model", "key")
    models, keys = named["model"], named["key"]
    by_model.sort(key=lambda r: (-r.cost_units, models[r.group["model"]].code))
    by_key.sort(key=lambda r: (-r.cost_units, keys[r.group["key"]].name, keys[r.group["key"]].pk))
    model_labels = _unique_labels({r.group["model"]: models[r.group["model"]].name for r in by_model})
    key_labels = _unique_labels({r.group["key"]: keys[r.group["key"]].name for r in by_key})
    top_models = [r.group["model"] for r in by_model[:TOP]]
    top_keys = [r.group["key"] for r in by_key[:TOP]]
    by_key_daily = usage.run(start, end, granularity=day, group_by=("key",), keys=tuple(top_keys), fill_empty=False)

    def units(row) -> int:
        return row.total_tokens + row.image_count + row.video_seconds

    def model_entry(row) -> dict[str, Any]:
        model = models[row.group["model"]]
        unit_type = UNIT_TYPES.get(model.modality, "tokens")
        total_units = {"images": row.image_count, "seconds": row.video_seconds}.get(unit_type, row.total_tokens)
        breakdown = None
        if unit_type == "tokens":
            breakdown = [{"type": kind, **amounts("in_breakdown", cost(row)), "units": count(row)}
                         for kind, cost, count in TOKEN_BREAKDOWN]
        return {"modelId": model.code, "modelName": model_labels[model.pk], "modelType": model.modality.upper(),
                "unitType": unit_type, **amounts("total", row.cost), "totalUnits": total_units,
                "breakdown": breakdown}

    def series(result, name: str, labels: dict[int, str], wanted: list[int]) -> dict[str, list[dict[str, Any]]]:
        # Every day of the range, each wanted group's spend that day (0 on a day without usage),
        # once per currency place: byModelDaily, byModelDailyUsd, ...
        costs = {(row.bucket.key, row.group[name]): row.cost for row in result.rows if row.group[name] in wanted}
        out = {}
        for n in names:
            out[n.series_suffix] = [
                {"date": int(bucket.start.timestamp()) * 1000,
                 **{labels[pk]: costs.get((bucket.key, pk), NO_COST) if n.currency == currency else NO_COST
                    for pk in wanted}}
                for bucket in result.buckets]
        return out

    model_series = series(by_model_daily, "model", model_labels, top_models)
    key_series = series(by_key_daily, "key", key_labels, top_keys)
    return {
        "lookback": lookback, "currency": currency,
        "startDate": start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "endDate": end.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "byDate": [{"date": row.bucket.start.date().isoformat(), **amounts("on_day", row.cost)} for row in daily],
        "byModel": [model_entry(r) for r in by_model],
        **{f"byModelDaily{suffix}": rows for suffix, rows in model_series.items()},
        "topModels": [model_labels[pk] for pk in top_models],
        "byKey": [{"apiKeyId": str(keys[r.group["key"]].uuid), "description": keys[r.group["key"]].name,
                   **amounts("total", r.cost), "totalUnits": units(r)} for r in by_key],
        **{f"byKeyDaily{suffix}": rows for suffix, rows in key_series.items()},
        "topKeyNames": [key_labels[pk] for pk in top_keys],
    }


# --- usage history (cursor pages) and balance -----------------------------------------------
#
# Venice's newer ledger: the same entries as `billing/usage`, oldest first, in keyset pages.
# The first request names the filters; each page answers a `nextCursor` that carries them with
# the position the walk stopped at, and the next request sends that cursor alone. The cursor is
# signed (so a tampered or foreign one is refused, not followed somewhere odd) and bound to the
# organization it was issued to.

HISTORY_CURSOR_SALT = "usage.api.venice.usage-history"
HISTORY_FILTERS = ("currency", "startTimestamp", "endTimestamp", "pageSize")
HISTORY_CSV_FIELDS = [*CSV_FIELDS, "apiKeyId"]
# Venice's credit units besides the ones an account can be kept in: asking for one finds nothing.
HISTORY_CURRENCIES = [*Currency.values, "EARNED_CREDITS"]


class UsageHistoryParams(_S.Serializer):
    currency = _S.ChoiceField(choices=HISTORY_CURRENCIES, required=False, help_text=(
        "Only entries in this currency: the account's own (e.g. USD or CNY) or a credit unit; every amount is "
        "kept in the account's currency, so another currency finds none. First page only."))
    startTimestamp = InstantField(required=False, help_text="Inclusive, ISO 8601. First page only.")  # noqa: N815
    endTimestamp = InstantField(required=False, help_text="Exclusive, ISO 8601. First page only.")  # noqa: N815
    pageSize = _S.IntegerField(required=False, min_value=10, max_value=1000, help_text=(  # noqa: N815
        "Entries per page, 10 to 1000 (default 1000). First page only."))
    cursor = _S.CharField(required=False, help_text=(
        "The previous page's `nextCursor`, sent alone: the filters travel inside it."))

    def validate_startTimestamp(self, value: datetime) -> datetime:  # noqa: N802
        return _within_ledger_time(value)

    def validate_endTimestamp(self, value: datetime) -> datetime:  # noqa: N802
        return _within_ledger_time(value)

    def validate(self, attrs):
        if "cursor" in attrs:
            given = [name for name in HISTORY_FILTERS if name in attrs]
            if given:
                raise _S.ValidationError({given[0]: "a continuation sends only `cursor`: the filters are inside it"})
        if "startTimestamp" in attrs and "endTimestamp" in attrs and attrs["endTimestamp"] <= attrs["startTimestamp"]:
            raise _S.ValidationError({"endTimestamp": "must be after startTimestamp"})
        return attrs


def _within_ledger_time(value: datetime) -> datetime:
    if not EPOCH <= value < END_OF_TIME:
        raise _S.ValidationError("must be between 1970-01-01 and 9999-01-01")
    return value


@dataclass(frozen=True)
class HistoryWalk:
    """A walk of the usage history: its filters and where its last page ended."""

    organization_id: int
    start: datetime | None
    end: datetime | None
    currency: str | None
    page_size: int
    position: LedgerPosition | None = None

    def encode(self) -> str:
        position = self.position
        return signing.dumps({
            "org": self.organization_id, "start": _iso_or_none(self.start), "end": _iso_or_none(self.end),
            "currency": self.currency, "size": self.page_size,
            "at": _iso_or_none(position.at if position else None), "id": position.id if position else None,
            "entry": position.entry if position else None}, salt=HISTORY_CURSOR_SALT, compress=True)

    @classmethod
    def decode(cls, cursor: str, organization_id: int) -> "HistoryWalk":
        try:
            payload = signing.loads(cursor, salt=HISTORY_CURSOR_SALT)
            if payload["org"] != organization_id:
                raise ValueError("issued to another organization")
            at = _parse_or_none(payload["at"])
            return cls(organization_id, _parse_or_none(payload["start"]), _parse_or_none(payload["end"]),
                       payload["currency"], int(payload["size"]),
                       LedgerPosition(at, int(payload["id"]), bool(payload["entry"])) if at else None)
        except (signing.BadSignature, KeyError, TypeError, ValueError) as error:
            raise InvalidRequest([FieldProblem(["query", "cursor"], (
                "not a cursor this endpoint issued to this organization: start the walk again without it"))],
                status_code=400) from error


def _iso_or_none(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _parse_or_none(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("naive instant")
    return moment


def history_entry(item: LedgerItem) -> dict[str, Any]:
    entry = ledger_entry(item)
    entry["apiKeyId"] = None if isinstance(item, LedgerEntry) else str(item.key.uuid)
    return entry


HISTORY_ENTRY = inline_serializer("BillingUsageHistoryEntry", {
    **_ledger_entry_fields(),
    "apiKeyId": _S.UUIDField(allow_null=True, help_text="The inference key charged; null on credits")}, many=True)


class BillingUsageHistoryView(RamAPIView):
    ram_actions = {"GET": "billing:ListBillingUsageHistory"}
    ram_resource = whole_collection
    dialect = VeniceDialect
    renderer_classes = [JSONRenderer, CSVRenderer]

    def handle_exception(self, exc):
        # Errors are Venice's JSON shape even when the caller asked for CSV.
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"
        return super().handle_exception(exc)

    @extend_schema(
        parameters=[UsageHistoryParams, OpenApiParameter("Accept", str, OpenApiParameter.HEADER, description=(
                        "application/json (the default) or text/csv; a type matching neither is 406")),
                    OpenApiParameter("x-next-cursor", str, OpenApiParameter.HEADER, response=[200],
                                     description="The next page's cursor (absent on the last page)")],
        responses={200: inline_serializer("BillingUsageHistoryResponse", {
            "data": HISTORY_ENTRY,
            "nextCursor": _S.CharField(allow_null=True,
                                       help_text="Send as `cursor` for the next page; null on the last page"),
        }), **VENICE_ERRORS},
        description=("Every ledger entry (charges negative, credits positive), oldest first, in keyset pages. "
                     "The first request names the filters (`currency`, `startTimestamp`, `endTimestamp`, "
                     "`pageSize`; `endTimestamp` after `startTimestamp`); a continuation sends `cursor` alone, "
                     "the previous page's `nextCursor` with the filters inside it: a cursor beside any filter, "
                     "or one this endpoint did not issue to this organization, is refused with 400. "
                     "With `Accept: text/csv` each page is a CSV document (header row included) and the next "
                     "cursor travels in the `x-next-cursor` header."))
    def get(self, request):
        params = parse_query(UsageHistoryParams, request)
        organization = request.organization
        if "cursor" in params:
            walk = HistoryWalk.decode(params["cursor"], organization.pk)
        else:
            walk = HistoryWalk(organization.pk, params.get("startTimestamp"), params.get("endTimestamp"),
                               params.get("currency"), params.get("pageSize", 1000))
        ledger = UsageLedger(organization, start=walk.start, end=walk.end, currency=walk.currency)
        items, position = ledger.after(walk.position, walk.page_size)
        next_cursor = replace(walk, position=position).encode() if position else None
        entries = [history_entry(item) for item in items]
        if _wants_csv(request, {}):
            response = HttpResponse("".join(_csv_lines(iter(entries), HISTORY_CSV_FIELDS)), content_type="text/csv")
            response["Content-Disposition"] = "attachment; filename=billing_usage_history.csv"
        else:
            response = Response({"data": entries, "nextCursor": next_cursor})
        if next_cursor:
            response["x-next-cursor"] = next_cursor
        return response


BALANCE_RESPONSE = inline_serializer("BillingBalanceResponse", {
    "canConsume": _S.BooleanField(help_text="Whether there is money left to spend: an active account whose "
                                            "balance and credit limit are above zero"),
    "consumptionCurrency": _S.CharField(help_text="The account's currency, which every charge is made in"),
    "balances": inline_serializer("BillingBalances", {
        "diem": _S.FloatField(allow_null=True, help_text="The balance if the account is kept in DIEM, else null"),
        "usd": _S.FloatField(allow_null=True, help_text="The balance if the account is kept in USD, else null"),
    }, help_text="The balance under the account's currency in lower case (`usd`, `diem`, or e.g. `cny`)"),
    "diemEpochAllocation": _S.FloatField(help_text="Always 0: no DIEM is staked here"),
})


class BillingBalanceView(RamAPIView):
    ram_actions = {"GET": "billing:GetBalance"}
    ram_resource = whole_collection
    dialect = VeniceDialect

    # No parameters, so no 400.
    @extend_schema(responses={200: BALANCE_RESPONSE, 401: VeniceError, 403: VeniceError})
    def get(self, request):
        balance = account_balance(request.organization)
        balances: dict[str, Decimal | None] = {"diem": None, "usd": None}
        balances[balance.currency.lower()] = balance.balance
        return Response({"canConsume": balance.can_consume, "consumptionCurrency": balance.currency,
                         "balances": balances, "diemEpochAllocation": 0})
