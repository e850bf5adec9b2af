"""Alibaba Cloud ModelRouter dialect (seed 001): the cost pages under
`/api/v1/modelRouter/open/billing/cost/`: tabs, overview, trend, models, model-detail, breakdown.

Parsing and rendering only; every number comes from the query engine. Time rows cover every
bucket of the range (hourly or daily, aligned in the organization's zone). Paging is keyset:
`nextToken` is signed and names the last row returned, so a later page aggregates only its own
window of time; the older page/pageIndex/pageSize style keeps working."""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.core import signing
from django.db.models import Q
from django.http import Http404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.models import Model
from billing.selectors import account_currency
from keys.models import InferenceKey
from portal.api.errors import ApiError, FieldProblem, InvalidRequest, request_id
from portal.api.fields import EpochSecondsField, PageField
from portal.api.permissions import RamTarget, whole_collection
from portal.api.views import RamAPIView, parse_query
from portal.models import Department, Member, Organization
from usage.query import Result, Row, for_organization
from usage.selectors import objects_named_in
from usage.timebuckets import Bucket, Granularity, buckets, instant_from_epoch


class ModelRouterDialect:
    """Alibaba Cloud ModelRouter: every answer in the OpenApiSingleResponse envelope."""

    tag = "Alibaba ModelRouter"
    validation_status = 400
    CODES = {
        "NoOrganization": ("B.Permission.OrgNoExistException", "组织不存在,请主账号开通权限后再试,或联系管理员"),
        "AccessDenied": ("B.Permission.DeniedException", "鉴权失败或权限不足"),
        "Unauthorized": ("B.Permission.Unauthenticated", "未认证: 缺少或无效的凭证"),
        "NotFound": ("B.Resource.NotFound", "资源不存在"),
    }

    @staticmethod
    def envelope(request, data, *, status: int = 200, code: str | None = None, message: str | None = None,
                 max_results: int | None = None, next_token: str | None = None) -> dict:
        return {"requestId": request_id(request), "success": status < 400, "errCode": code, "errMessage": message,
                "httpStatusCode": status, "data": data, "maxResults": max_results, "nextToken": next_token}

    @classmethod
    def render(cls, error: ApiError, request=None) -> Response:
        if error.status == 400 or error.problems:
            names = ", ".join(str(p.location[-1]) for p in error.problems) or "request"
            details = "; ".join(f"{p.location[-1]}: {p.message}" for p in error.problems)
            code, message = "B.Param.Invalid", f"参数错误 ({names}): {details or error.message}"
        elif error.code in cls.CODES:
            code, message = cls.CODES[error.code]
            if error.code == "AccessDenied":
                message = f"{message}: {error.extra.get('action')} on {error.extra.get('resource')}"
        else:
            code, message = "Server.Internal.UnknownError", error.message
        body = cls.envelope(request, None, status=error.status, code=code, message=message)
        return Response(body, status=error.status)


_S = serializers
MAX_HOURLY = timedelta(days=31)
MAX_DAILY = timedelta(days=366)
TOKEN_SALT = "modelrouter.nextToken"
TABS = [
    {"key": "all", "label": "全部", "modelTypes": ["llm", "vl", "image", "video", "tts", "asr"]},
    {"key": "llm", "label": "大语言模型", "modelTypes": ["llm"]},
    {"key": "vl", "label": "视觉理解", "modelTypes": ["vl"]},
    {"key": "image", "label": "图像生成", "modelTypes": ["image"]},
    {"key": "video", "label": "视频生成", "modelTypes": ["video"]},
    {"key": "speech", "label": "语音", "modelTypes": ["tts", "asr"]},
]


def columns(currency: str) -> list[dict[str, Any]]:
    money_unit = "元" if currency == "CNY" else currency
    return [
        {"key": "total_calls", "label": "调用次数", "sortable": True, "unit": "次"},
        {"key": "total_amount", "label": "消费金额", "sortable": True, "unit": money_unit},
        {"key": "input_tokens", "label": "输入Token数", "sortable": True, "unit": "个"},
        {"key": "output_tokens", "label": "输出Token数", "sortable": True, "unit": "个"},
        {"key": "image_count", "label": "图片数量", "sortable": True, "unit": "张"},
        {"key": "video_duration", "label": "视频时长", "sortable": True, "unit": "秒"},
    ]


def metric_values(row: Row) -> dict[str, Any]:
    return {"total_calls": row.requests, "total_amount": row.cost, "input_tokens": row.prompt_tokens,
            "output_tokens": row.completion_tokens, "image_count": row.image_count,
            "video_duration": row.video_seconds}


def encoded_values(row: Row, **extra: Any) -> str:
    """`values` exactly as the seed shows it: a JSON string holding a JSON-encoded object. Amounts
    are written with all their decimal digits (the json module would go through binary floats)."""
    values = {**metric_values(row), **extra}
    inner = "{" + ",".join(f"{json.dumps(name)}:{_literal(value)}" for name, value in values.items()) + "}"
    return json.dumps(inner, ensure_ascii=False)


def _literal(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value)


# The catalog's modalities, spelled out so the schema's pattern lists exactly what the check accepts.
_MODALITY = "(" + "|".join(Model.Modality.values) + ")"
MODEL_TYPES = rf"^{_MODALITY}(,{_MODALITY})*$"


def _ids(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part.strip()]


class CommonParams(_S.Serializer):
    startTime = EpochSecondsField(help_text="Unix seconds, inclusive")  # noqa: N815 - the vendor's spelling
    endTime = EpochSecondsField(help_text="Unix seconds, exclusive; after startTime")  # noqa: N815
    clientId = _S.IntegerField(required=False, min_value=1, help_text="Not with clientIds")  # noqa: N815
    clientIds = _S.RegexField(r"^\d+(,\d+)*$", required=False, help_text="Not with clientId")  # noqa: N815
    apiKeyId = _S.IntegerField(required=False, min_value=1, help_text="Requires clientId")  # noqa: N815
    memberUserIds = _S.RegexField(r"^\d+(,\d+)*$", required=False)  # noqa: N815
    modelTypes = _S.RegexField(MODEL_TYPES, required=False, help_text=(  # noqa: N815
        "Comma list of " + ", ".join(Model.Modality.values)))
    granularity = _S.ChoiceField(choices=["hourly", "daily"], required=False)
    modelId = _S.IntegerField(required=False, min_value=1)  # noqa: N815
    search = _S.CharField(required=False, max_length=100)
    maxResults = _S.IntegerField(required=False, min_value=1, max_value=100)  # noqa: N815
    nextToken = _S.CharField(required=False, allow_blank=True, max_length=2000)  # noqa: N815
    page = PageField(required=False)
    pageIndex = PageField(required=False)  # noqa: N815
    pageSize = _S.IntegerField(required=False, min_value=1, max_value=500)  # noqa: N815

    def validate_modelTypes(self, value: str) -> list[str]:  # noqa: N802
        types = value.split(",")
        unknown = sorted(set(types) - set(Model.Modality.values))
        if unknown:
            raise _S.ValidationError(f"unknown model types {unknown}")
        return types

    def validate(self, attrs):
        if attrs["endTime"] <= attrs["startTime"]:
            raise _S.ValidationError({"endTime": "must be after startTime"})
        if "clientId" in attrs and "clientIds" in attrs:
            raise _S.ValidationError({"clientIds": "give clientId or clientIds, not both"})
        if "apiKeyId" in attrs and "clientId" not in attrs:
            raise _S.ValidationError({"apiKeyId": "requires clientId"})
        span = timedelta(seconds=attrs["endTime"] - attrs["startTime"])
        granularity = attrs.get("granularity") or ("hourly" if span <= timedelta(days=1) else "daily")
        if span > (MAX_HOURLY if granularity == "hourly" else MAX_DAILY):
            raise _S.ValidationError({"endTime": f"a {granularity} range may span at most "
                                                 f"{(MAX_HOURLY if granularity == 'hourly' else MAX_DAILY).days} days"})
        attrs["granularity"] = granularity
        return attrs


class ModelDetailParams(CommonParams):
    modelId = _S.IntegerField(min_value=1)  # noqa: N815 - required here: the model whose rows are asked for


@dataclass
class Scope:
    """A parsed, authorized ModelRouter request."""

    organization: Organization
    start: datetime
    end: datetime
    granularity: str
    filters: dict[str, Any]
    params: dict[str, Any]

    def engine_granularity(self) -> Granularity:
        return Granularity.of("hour" if self.granularity == "hourly" else "day")

    def run(self, **overrides: Any) -> Result:
        fields = {"start": self.start, "end": self.end, **self.filters, **overrides}
        return for_organization(self.organization).run(**fields)

    def row_counts(self, **overrides: Any) -> dict[Any, int]:
        fields = {"start": self.start, "end": self.end, **self.filters, **overrides}
        return for_organization(self.organization).row_counts(**fields)


class ModelRouterView(RamAPIView):
    dialect = ModelRouterDialect
    params_class: type[CommonParams] = CommonParams

    def ram_resource(self, request) -> list[RamTarget]:
        # Checked against each department the request names (clientId or clientIds), else all.
        return [RamTarget(pk, pk) for pk in self.departments] or [RamTarget()]

    @cached_property
    def params(self) -> dict[str, Any]:
        return parse_query(self.params_class, self.request)

    @cached_property
    def departments(self) -> tuple[int, ...]:
        params = self.params
        department_ids = [params["clientId"]] if "clientId" in params else _ids(params.get("clientIds", ""))
        if not department_ids:
            return ()
        found = set(Department.objects.filter(organization=self.request.organization, pk__in=department_ids)
                    .values_list("pk", flat=True))
        if found != set(department_ids):
            raise Http404("unknown client")
        return tuple(sorted(found))

    def scope(self, request) -> Scope:
        params, organization = self.params, request.organization
        filters: dict[str, Any] = {}
        if self.departments:
            filters["departments"] = self.departments
        if "apiKeyId" in params:
            if not InferenceKey.objects.filter(organization=organization, department_id=params["clientId"],
                                               pk=params["apiKeyId"]).exists():
                raise Http404("unknown api key")
            filters["keys"] = (params["apiKeyId"],)
        if "memberUserIds" in params:
            members = _ids(params["memberUserIds"])
            if Member.objects.filter(organization=organization, pk__in=members).count() != len(set(members)):
                raise Http404("unknown member")
            filters["members"] = tuple(members)
        if "modelTypes" in params:
            filters["model_types"] = tuple(params["modelTypes"])
        return Scope(organization, instant_from_epoch(params["startTime"]), instant_from_epoch(params["endTime"]),
                     params["granularity"], filters, params)

    def respond(self, request, data, *, max_results=None, next_token=None) -> Response:
        return Response(ModelRouterDialect.envelope(request, data, max_results=max_results, next_token=next_token))


# --- paging --------------------------------------------------------------------------------

@dataclass
class Paging:
    keyset: bool
    size: int
    page: int
    after: Any  # what the token says was the last row returned
    total: int | None  # carried in the token so later pages need not count again


def paging(request, scope: Scope, endpoint: str) -> Paging:
    params = scope.params
    if "maxResults" in params or params.get("nextToken"):
        size = params.get("maxResults", 10)
        token = params.get("nextToken")
        if not token:
            return Paging(True, size, 1, None, None)
        try:
            payload = signing.loads(token, salt=TOKEN_SALT)
        except signing.BadSignature as error:
            raise InvalidRequest([FieldProblem(["query", "nextToken"], "invalid or tampered token")]) from error
        if payload.get("q") != _fingerprint(request, endpoint):
            raise InvalidRequest([FieldProblem(["query", "nextToken"], "token belongs to another query")])
        return Paging(True, size, payload["page"], payload["after"], payload["total"])
    page = params.get("pageIndex") or params.get("page") or 1
    return Paging(False, params.get("pageSize", 20), page, None, None)


def _fingerprint(request, endpoint: str) -> str:
    # The token only continues the query it came from: same endpoint, same filters, same range.
    relevant = sorted((k, v) for k, v in request.query_params.items() if k not in ("nextToken", "maxResults"))
    return hashlib.sha256(json.dumps([endpoint, relevant]).encode()).hexdigest()[:32]


def next_token(request, endpoint: str, paging_state: Paging, after: Any, total: int) -> str:
    return signing.dumps({"q": _fingerprint(request, endpoint), "page": paging_state.page + 1, "after": after,
                          "total": total}, salt=TOKEN_SALT, compress=True)


# --- schema --------------------------------------------------------------------------------

def _envelope(name: str, data: Any) -> _S.Serializer:
    return inline_serializer(name, {
        "requestId": _S.CharField(), "success": _S.BooleanField(), "errCode": _S.CharField(allow_null=True),
        "errMessage": _S.CharField(allow_null=True), "httpStatusCode": _S.IntegerField(), "data": data,
        "maxResults": _S.IntegerField(allow_null=True), "nextToken": _S.CharField(allow_null=True)})


ERROR_ENVELOPE = _envelope("ModelRouterError", _S.JSONField(allow_null=True))
ERRORS = {400: ERROR_ENVELOPE, 401: ERROR_ENVELOPE, 403: ERROR_ENVELOPE, 404: ERROR_ENVELOPE}
COLUMN = {"key": _S.CharField(), "label": _S.CharField(), "sortable": _S.BooleanField(), "unit": _S.CharField()}
TIME_ROW = {"timestamp": _S.IntegerField(), "values": _S.CharField(help_text="JSON-encoded string, as seed 001")}


def documented(name: str, data: Any, params: type[CommonParams] = CommonParams):
    return extend_schema(parameters=[params], responses={200: _envelope(name, data), **ERRORS})


# --- views ---------------------------------------------------------------------------------

class TabsView(ModelRouterView):
    ram_actions = {"GET": "aicontent:ModelRouterQueryCostTabs"}
    ram_resource = whole_collection  # open to every member (member_baseline): nothing to parse

    @extend_schema(responses={200: _envelope("CostTabs", inline_serializer("CostTab", {
        "key": _S.CharField(), "label": _S.CharField(), "modelTypes": _S.ListField(child=_S.CharField())},
        many=True)), **ERRORS})
    def get(self, request):
        return self.respond(request, TABS)


class OverviewView(ModelRouterView):
    ram_actions = {"GET": "aicontent:ModelRouterQueryCostOverviewMetrics"}

    @documented("CostOverview", inline_serializer("CostOverviewMetric", {
        "key": _S.CharField(), "label": _S.CharField(), "unit": _S.CharField(), "value": _S.FloatField()}, many=True))
    def get(self, request):
        scope = self.scope(request)
        totals = scope.run().rows[0]
        values = metric_values(totals)
        return self.respond(request, [{**column, "value": values[column["key"]]} for column in columns(
            account_currency(scope.organization))])


class TrendView(ModelRouterView):
    ram_actions = {"GET": "aicontent:ModelRouterQueryCostTrendMetrics"}

    @documented("CostTrend", inline_serializer("CostTrendData", {
        "defaultMetric": _S.CharField(), "granularity": _S.CharField(),
        "metrics": inline_serializer("CostColumn", COLUMN, many=True),
        "points": inline_serializer("CostTrendPoint", TIME_ROW, many=True)}))
    def get(self, request):
        scope = self.scope(request)
        rows = scope.run(granularity=scope.engine_granularity()).rows
        return self.respond(request, {
            "defaultMetric": "total_amount", "granularity": scope.granularity,
            "metrics": columns(account_currency(scope.organization)),
            "points": [{"timestamp": _epoch(row.bucket), "values": encoded_values(row, timestamp=_epoch(row.bucket))}
                       for row in rows]})


class ModelsView(ModelRouterView):
    ram_actions = {"GET": "aicontent:ModelRouterQueryCostModelList"}

    @documented("CostModels", inline_serializer("CostModelList", {
        "columns": inline_serializer("CostColumn", COLUMN, many=True), "idField": _S.CharField(),
        "nameField": _S.CharField(), "rows": inline_serializer("CostModelRow", {
            "modelId": _S.IntegerField(), "modelCode": _S.CharField(), "modelName": _S.CharField(),
            "values": _S.CharField()}, many=True)}))
    def get(self, request):
        scope = self.scope(request)
        search = scope.params.get("search", "").strip()
        if search:
            matching = tuple(Model.objects.filter(Q(code__icontains=search) | Q(name__icontains=search))
                             .values_list("pk", flat=True))
            scope.filters["models"] = matching or (0,)
        rows = [row for row in scope.run(group_by=("model",)).rows if row.requests]
        catalog = objects_named_in(rows, "model")["model"]
        rows.sort(key=lambda row: (-row.cost_units, catalog[row.group["model"]].code))
        state = paging(request, scope, "models")
        start = (state.page - 1) * state.size
        page = rows[start : start + state.size]
        more = start + state.size < len(rows)
        token = next_token(request, "models", state, None, len(rows)) if state.keyset and more else ""
        return self.respond(request, {
            "columns": columns(account_currency(scope.organization)), "idField": "model_id", "nameField": "model_name",
            "rows": [{"modelId": row.group["model"], "modelCode": catalog[row.group["model"]].code,
                      "modelName": catalog[row.group["model"]].name, "values": encoded_values(row)} for row in page],
        }, max_results=state.size if state.keyset else None, next_token=token if state.keyset else None)


class ModelDetailView(ModelRouterView):
    ram_actions = {"GET": "aicontent:ModelRouterQueryCostModelDetail"}
    params_class = ModelDetailParams

    @documented("CostModelDetail", inline_serializer("CostModelDetailRespDTO", {
        "columns": inline_serializer("CostColumn", COLUMN, many=True), "granularity": _S.CharField(),
        "modelId": _S.IntegerField(), "modelName": _S.CharField(), "page": _S.IntegerField(),
        "pageSize": _S.IntegerField(), "rows": inline_serializer("CostTimeRow", TIME_ROW, many=True),
        "total": _S.IntegerField()}), ModelDetailParams)
    def get(self, request):
        scope = self.scope(request)
        model = Model.objects.filter(pk=scope.params["modelId"]).first()
        if model is None:
            raise Http404("unknown model")
        scope.filters["models"] = (model.pk,)
        all_buckets = buckets(scope.start, scope.end, scope.organization.zone, scope.engine_granularity())
        state = paging(request, scope, "model-detail")
        # Keyset: the page is the next `size` buckets after the last one returned; only that window is read.
        first = (state.after + 1) if state.keyset and state.after is not None else (state.page - 1) * state.size
        window = all_buckets[first : first + state.size]
        rows = []
        if window:
            start = max(scope.start, window[0].start)
            end = min(scope.end, window[-1].end)
            rows = scope.run(start=start, end=end, granularity=scope.engine_granularity()).rows
        more = first + state.size < len(all_buckets)
        token = next_token(request, "model-detail", state, first + len(window) - 1, len(all_buckets)) \
            if state.keyset and more else ""
        return self.respond(request, {
            "columns": columns(account_currency(scope.organization)), "granularity": scope.granularity,
            "modelId": model.pk, "modelName": model.name, "page": state.page, "pageSize": state.size,
            "rows": [{"timestamp": _epoch(row.bucket), "values": encoded_values(row, timestamp=_epoch(row.bucket))}
                     for row in rows],
            "total": len(all_buckets),
        }, max_results=state.size if state.keyset else None, next_token=token if state.keyset else None)


BREAKDOWN_GROUPS = ("department", "key", "member", "model")


class BreakdownView(ModelRouterView):
    ram_actions = {"GET": "aicontent:ModelRouterQueryBillingCostBreakdown"}

    @documented("CostBreakdown", inline_serializer("CostBreakdownData", {
        "columns": inline_serializer("CostColumn", COLUMN, many=True), "granularity": _S.CharField(),
        "page": _S.IntegerField(), "pageSize": _S.IntegerField(), "total": _S.IntegerField(),
        "rows": inline_serializer("CostBreakdownRow", {
            "summaryTime": _S.IntegerField(), "clientId": _S.IntegerField(allow_null=True),
            "clientName": _S.CharField(allow_null=True), "apiKeyId": _S.IntegerField(allow_null=True),
            "apiKeyName": _S.CharField(allow_null=True), "memberUserId": _S.IntegerField(allow_null=True),
            "memberUserName": _S.CharField(allow_null=True), "modelId": _S.IntegerField(allow_null=True),
            "modelCode": _S.CharField(allow_null=True), "modelName": _S.CharField(allow_null=True),
            "modelType": _S.CharField(allow_null=True), "payableAmount": _S.FloatField(),
            "values": _S.CharField()}, many=True)}))
    def get(self, request):
        scope = self.scope(request)
        all_buckets = buckets(scope.start, scope.end, scope.organization.zone, scope.engine_granularity())
        state = paging(request, scope, "breakdown")
        sizes = None
        if state.total is None or not state.keyset:
            # Rows per bucket, counted on the rollups: one per group with events, or one zero row.
            counts = scope.row_counts(granularity=scope.engine_granularity(), group_by=BREAKDOWN_GROUPS)
            sizes = [max(1, counts.get(bucket.key, 0)) for bucket in all_buckets]
        total = state.total if state.total is not None else sum(sizes)
        if state.keyset:
            index, group = state.after or (0, None)
            if state.after is not None and group is None:  # the last page ended on a whole bucket
                index += 1
            page_rows = self._walk(scope, all_buckets, index, group, 0, state.size + 1)
        else:
            # A page number is found on the counts: the bucket it starts in and how many of that
            # bucket's rows come before it. Only that bucket's earlier rows are read and skipped.
            skip = (state.page - 1) * state.size
            index = 0
            while index < len(all_buckets) and skip >= sizes[index]:
                skip -= sizes[index]
                index += 1
            page_rows = self._walk(scope, all_buckets, index, None, skip, state.size + 1)
        more = len(page_rows) > state.size
        page_rows = page_rows[: state.size]
        after = None
        if more and page_rows:
            last = page_rows[-1]
            after = [_bucket_index(all_buckets, last.bucket),
                     None if last.requests == 0 else [last.group[name] for name in BREAKDOWN_GROUPS]]
        names = objects_named_in(page_rows, *BREAKDOWN_GROUPS)
        token = next_token(request, "breakdown", state, after, total) if state.keyset and after is not None else ""
        return self.respond(request, {
            "columns": columns(account_currency(scope.organization)), "granularity": scope.granularity,
            "page": state.page, "pageSize": state.size,
            "rows": [_breakdown_row(row, names) for row in page_rows], "total": total,
        }, max_results=state.size if state.keyset else None, next_token=token if state.keyset else None)

    def _walk(self, scope: Scope, all_buckets: list[Bucket], index: int, after_group: list | None, skip: int,
              wanted: int) -> list[Row]:
        """Up to `wanted` rows from bucket `index` on, in (bucket, group) order: that bucket's
        groups after `after_group` (less the first `skip`), then the following buckets', each
        empty bucket as one zero row. Each read is a keyset page of the engine (LIMIT, no OFFSET)."""
        if index >= len(all_buckets):
            return []
        granularity, first = scope.engine_granularity(), all_buckets[index]
        rows = scope.run(start=max(scope.start, first.start), end=min(scope.end, first.end), granularity=granularity,
                         group_by=BREAKDOWN_GROUPS, fill_empty=False, limit=skip + wanted,
                         after_group=tuple(after_group) if after_group is not None else None).rows[skip:]
        if not rows and after_group is None and skip == 0:
            rows = [_zero_row(first)]
        if len(rows) >= wanted or index + 1 >= len(all_buckets):
            return rows[:wanted]
        following = all_buckets[index + 1 :]
        limit = wanted - len(rows)
        found = scope.run(start=following[0].start, end=scope.end, granularity=granularity,
                          group_by=BREAKDOWN_GROUPS, fill_empty=False, limit=limit).rows
        # Every bucket before the last one found is complete; after it, the range holds no more
        # rows only if fewer than `limit` came back.
        pending = iter(found)
        row = next(pending, None)
        for bucket in following:
            if len(rows) >= wanted:
                break
            if row is None:
                if len(found) >= limit:
                    break
                rows.append(_zero_row(bucket))
                continue
            if row.bucket.key != bucket.key:
                rows.append(_zero_row(bucket))
                continue
            while row is not None and row.bucket.key == bucket.key:
                rows.append(row)
                row = next(pending, None)
        return rows[:wanted]


def _zero_row(bucket: Bucket) -> Row:
    return Row(bucket, dict.fromkeys(BREAKDOWN_GROUPS))


def _bucket_index(all_buckets: list[Bucket], bucket: Bucket) -> int:
    # Buckets are in order and few (at most 744 hours or 366 days): a bisection would do no better.
    return next(index for index, candidate in enumerate(all_buckets) if candidate.key == bucket.key)


def _breakdown_row(row: Row, names) -> dict[str, Any]:
    department = names["department"].get(row.group.get("department"))
    key = names["key"].get(row.group.get("key"))
    member = names["member"].get(row.group.get("member"))
    model = names["model"].get(row.group.get("model"))
    return {
        "summaryTime": _epoch(row.bucket),
        "clientId": department.pk if department else None, "clientName": department.name if department else None,
        "apiKeyId": key.pk if key else None, "apiKeyName": key.name if key else None,
        "memberUserId": member.pk if member else None,
        "memberUserName": member.user.get_username() if member else None,
        "modelId": model.pk if model else None, "modelCode": model.code if model else None,
        "modelName": model.name if model else None, "modelType": model.modality if model else None,
        "payableAmount": row.cost, "values": encoded_values(row, timestamp=_epoch(row.bucket)),
    }


def _epoch(bucket: Bucket) -> int:
    return int(bucket.start.timestamp())
