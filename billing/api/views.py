"""AIone dialect, catalog and billing (seed 000): `GET /api/v1/models`, `GET /api/v1/billing/plan`,
`GET /api/v1/billing/account`. Money is a decimal string; `*_rmb` amounts are in the account's
currency, rounded half-up to 2 places (prices keep their digits)."""

from decimal import Decimal

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.models import BillingAccount, Model, Price
from billing.money import decimal_string
from billing.selectors import account_balance, account_currency, current_subscription, month_to_date_cost
from portal.api.permissions import whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView

_S = serializers


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else decimal_string(amount)


def _price(amount: Decimal | None) -> str | None:
    # Per-token prices are small: keep every digit, without trailing zeros.
    if amount is None:
        return None
    return format(amount.normalize(), "f")


ModelInfo = inline_serializer("ModelInfo", {
    "id": _S.CharField(), "name": _S.CharField(), "provider": _S.CharField(), "modality": _S.CharField(),
    "context_window": _S.IntegerField(allow_null=True),
    **{name: _S.CharField(allow_null=True) for name in (
        "input_price_rmb_per_mtok", "output_price_rmb_per_mtok", "cached_input_price_rmb_per_mtok",
        "image_price_rmb", "video_price_rmb_per_second")},
    "enabled": _S.BooleanField()}, many=True)


class ModelListView(RamAPIView):
    ram_actions = {"GET": "models:ListModels"}
    ram_resource = whole_collection

    @aione(inline_serializer("ModelListResponse", {"data": ModelInfo}))
    def get(self, request):
        organization = request.organization
        currency = account_currency(organization)
        now = timezone.now()
        current: dict[int, Price] = {}
        for price in Price.objects.filter(currency=currency, effective_from__lte=now).order_by("effective_from"):
            current[price.model_id] = price  # the latest in force wins
        data = []
        for model in Model.objects.order_by("provider", "code"):
            price = current.get(model.pk)
            data.append({
                "id": model.code, "name": model.name, "provider": model.provider, "modality": model.modality,
                "context_window": model.context_window,
                "input_price_rmb_per_mtok": _price(price.input_per_mtok) if price else None,
                "output_price_rmb_per_mtok": _price(price.output_per_mtok) if price else None,
                "cached_input_price_rmb_per_mtok": _price(price.cached_input_per_mtok) if price else None,
                "image_price_rmb": _price(price.per_image) if price else None,
                "video_price_rmb_per_second": _price(price.per_video_second) if price else None,
                "enabled": model.enabled,
            })
        return Response({"data": data})


class CurrentPlanView(RamAPIView):
    ram_actions = {"GET": "billing:GetCurrentPlan"}
    ram_resource = whole_collection

    @aione(inline_serializer("PlanDetailResponse", {
        "id": _S.UUIDField(), "code": _S.CharField(), "name": _S.CharField(), "monthly_fee_rmb": _S.CharField(),
        "included_tokens": _S.IntegerField(), "rpm_limit": _S.IntegerField(), "tpm_limit": _S.IntegerField(),
        "max_keys": _S.IntegerField(), "max_teams": _S.IntegerField(),
        "models_allowed": _S.ListField(child=_S.CharField()), "started_at": _S.DateTimeField(),
        "expires_at": _S.DateTimeField(allow_null=True), "status": _S.CharField()}))
    def get(self, request):
        subscription = current_subscription(request.organization)
        if subscription is None:
            raise Http404("no current plan")
        plan = subscription.plan
        return Response({
            "id": str(plan.uuid), "code": plan.code, "name": plan.name, "monthly_fee_rmb": _money(plan.monthly_fee),
            "included_tokens": plan.included_tokens, "rpm_limit": plan.rpm_limit, "tpm_limit": plan.tpm_limit,
            "max_keys": plan.max_keys, "max_teams": plan.max_teams, "models_allowed": plan.models_allowed,
            "started_at": subscription.started_at, "expires_at": subscription.expires_at,
            "status": subscription.status})


class BillingAccountView(RamAPIView):
    ram_actions = {"GET": "billing:GetBillingAccount"}
    ram_resource = whole_collection

    @aione(inline_serializer("BillingAccountResponse", {
        "org_id": _S.UUIDField(), "currency": _S.CharField(), "balance_rmb": _S.CharField(),
        "credit_limit_rmb": _S.CharField(), "monthly_budget_rmb": _S.CharField(allow_null=True),
        "month_to_date_cost_rmb": _S.CharField(), "billing_email": _S.CharField(), "tax_id": _S.CharField(),
        "status": _S.CharField()}))
    def get(self, request):
        organization = request.organization
        account = BillingAccount.objects.get(organization=organization)
        balance = account_balance(organization)
        return Response({
            "org_id": str(organization.uuid), "currency": account.currency, "balance_rmb": _money(balance.balance),
            "credit_limit_rmb": _money(account.credit_limit), "monthly_budget_rmb": _money(account.monthly_budget),
            "month_to_date_cost_rmb": _money(month_to_date_cost(organization)),
            "billing_email": account.billing_email, "tax_id": account.tax_id, "status": account.status})
