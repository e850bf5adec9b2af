"""r9s Manager dialect (seed 004): `GET /api/v1/portal/management/usage` and `/balance`, in the
`{"meta", "data"}` envelope. Errors use the same envelope with the HTTP status as `meta.code`."""

from datetime import timedelta

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.selectors import account_balance
from portal.api.errors import ApiError, request_id
from portal.api.fields import EpochSecondsField
from portal.api.permissions import whole_collection
from portal.api.views import RamAPIView, parse_query
from usage.query import for_organization
from usage.selectors import model_codes
from usage.timebuckets import Granularity, instant_from_epoch


class R9sDialect:
    """r9s Manager API: {"meta": {"code", "message", "request_id"}, "data": ...}."""

    tag = "r9s Manager"
    validation_status = 400

    @staticmethod
    def envelope(request, data, code: int = 200, message: str = "success") -> dict:
        return {"meta": {"code": code, "message": message, "request_id": request_id(request)}, "data": data}

    @classmethod
    def render(cls, error: ApiError, request=None) -> Response:
        message = error.message
        if error.problems:
            message = "; ".join(f"{p.location[-1]}: {p.message}" for p in error.problems)
        return Response(cls.envelope(request, None, error.status, message), status=error.status)


MAX_RANGE = timedelta(days=366)
_S = serializers


def _meta(name: str):
    return inline_serializer(name, {"code": _S.IntegerField(), "message": _S.CharField(),
                                    "request_id": _S.CharField()})


def _amount(**kwargs) -> _S.DecimalField:
    return _S.DecimalField(max_digits=24, decimal_places=8, coerce_to_string=False, **kwargs)


ERROR = inline_serializer("R9sError", {"meta": _meta("R9sErrorMeta"), "data": _S.JSONField(allow_null=True)})
R9S_ERRORS = {400: ERROR, 401: ERROR, 403: ERROR}


class UsageParams(_S.Serializer):
    start_time = EpochSecondsField(help_text="Unix seconds, inclusive")
    end_time = EpochSecondsField(help_text="Unix seconds, exclusive; after start_time, at most 366 days later")

    def validate(self, attrs):
        if attrs["start_time"] >= attrs["end_time"]:
            raise _S.ValidationError({"end_time": "must be after start_time"})
        if attrs["end_time"] - attrs["start_time"] > MAX_RANGE.total_seconds():
            raise _S.ValidationError({"end_time": "the range may span at most 366 days"})
        return attrs


class ManagementUsageView(RamAPIView):
    dialect = R9sDialect
    ram_actions = {"GET": "management:QueryUsage"}
    ram_resource = whole_collection

    @extend_schema(parameters=[UsageParams], responses={200: inline_serializer("R9sUsageResponse", {
        "meta": _meta("R9sMeta"), "data": inline_serializer("R9sUsageData", {
            "records": inline_serializer("R9sUsageRecord", {"timestamp": _S.IntegerField(), "tokens": _S.IntegerField(),
                                                            "model": _S.CharField()}, many=True),
            "total_tokens": _S.IntegerField()})}), **R9S_ERRORS})
    def get(self, request):
        params = parse_query(UsageParams, request)
        organization = request.organization
        result = for_organization(organization).run(
            instant_from_epoch(params["start_time"]), instant_from_epoch(params["end_time"]),
            granularity=Granularity.of("day"), group_by=("model",), fill_empty=False)
        codes = model_codes()
        records = [{"timestamp": int(row.bucket.start.timestamp()), "tokens": row.total_tokens,
                    "model": codes[row.group["model"]]} for row in result.rows if row.requests]
        records.sort(key=lambda record: (record["timestamp"], record["model"]))
        return Response(R9sDialect.envelope(request, {"records": records,
                                                      "total_tokens": sum(r["tokens"] for r in records)}))


# The first six are the fields r9s's own account client reads (r9s-python
# `models/account_models.py`, AccountBalanceData); the rest are this portal's (API.md §7).
BALANCE_DATA = inline_serializer("R9sBalance", {
    "balance": _amount(help_text="Credits in minus usage and other movements out, exact (8 places)"),
    "balance_str": _S.CharField(help_text="`balance` as a decimal string, e.g. \"125.50000000\""),
    "currency_code": _S.CharField(help_text="ISO 4217 code (or credit unit) of every amount here"),
    "coupon_balance": _amount(help_text="What unexpired credit grants (coupons) still hold"),
    "credit_limit": _amount(help_text="How far below zero the account may go"),
    "total_coupon_amount": _amount(help_text="Every credit grant ever made, used and expired ones included"),
    "org_id": _S.UUIDField(), "currency": _S.CharField(help_text="Same as `currency_code`"),
    "total_recharge": _amount(help_text="Every top-up ever paid in"),
    "total_used": _amount(help_text="Every usage charge ever"),
})


class ManagementBalanceView(RamAPIView):
    dialect = R9sDialect
    ram_actions = {"GET": "management:GetBalance"}
    ram_resource = whole_collection

    @extend_schema(responses={200: inline_serializer("R9sBalanceResponse", {
        "meta": _meta("R9sBalanceMeta"), "data": BALANCE_DATA}), **R9S_ERRORS})
    def get(self, request):
        organization = request.organization
        balance = account_balance(organization)
        return Response(R9sDialect.envelope(request, {
            "balance": balance.balance, "balance_str": str(balance.balance), "currency_code": balance.currency,
            "coupon_balance": balance.grant_remainder, "credit_limit": balance.credit_limit,
            "total_coupon_amount": balance.grants_ever, "org_id": str(organization.uuid),
            "currency": balance.currency, "total_recharge": balance.top_ups, "total_used": balance.usage}))
