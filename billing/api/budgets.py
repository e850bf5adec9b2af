"""Budgets and credit grants (API.md §10), AIone style: money as decimal strings, 422s naming the
field, another organization's budget is not found."""


from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from billing import budgets
from billing.models import Budget, CreditGrant
from billing.money import decimal_string
from billing.selectors import budgets_of, credit_grants
from billing.services import grant_credit
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.fields import InstantField, PositiveDecimalString, StrictBooleanField, StrictCharField
from portal.api.permissions import RamTarget, whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, RamObjectView, parse_body, request_actor
from portal.models import Organization

_S = serializers


class PositiveAmount(PositiveDecimalString):
    """A decimal string > 0 in the account's currency (8 places at most)."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("help_text", "Decimal string > 0, in the account's currency")
        super().__init__(places=8, **kwargs)


@extend_schema_field({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 100}, "minItems": 1,
                      "maxItems": 20, "uniqueItems": True,
                      "description": "Ascending percents 1-100; each alerts once per period"})
class Thresholds(_S.ListField):
    def __init__(self, **kwargs) -> None:
        super().__init__(child=_S.IntegerField(min_value=1, max_value=100), min_length=1, max_length=20,
                         help_text="Ascending percents 1-100; each alerts once per period", **kwargs)

    def to_internal_value(self, data):
        values = super().to_internal_value(data)
        if values != sorted(set(values)):
            raise _S.ValidationError(_("thresholds must be ascending and distinct"))
        return values


class BudgetCreate(_S.Serializer):
    scope = _S.ChoiceField(choices=Budget.Scope.values)
    target_id = _S.UUIDField(required=False, allow_null=True, default=None,
                             help_text="The department's or key's uuid; null for the organization")
    amount = PositiveAmount()
    thresholds = Thresholds(required=False, default=list(budgets.DEFAULT_THRESHOLDS))
    hard_limit = StrictBooleanField(required=False, default=False)

    def validate(self, attrs):
        if (attrs["scope"] == Budget.Scope.ORGANIZATION) != (attrs["target_id"] is None):
            raise _S.ValidationError({"target_id": _("null for an organization budget, else the department's or key's "
                                                     "uuid")})
        return attrs


class BudgetUpdate(_S.Serializer):
    amount = PositiveAmount(required=False)
    thresholds = Thresholds(required=False)
    hard_limit = StrictBooleanField(required=False)


BudgetShape = inline_serializer("Budget", {
    "id": _S.UUIDField(), "scope": _S.ChoiceField(choices=Budget.Scope.values),
    "target_id": _S.UUIDField(allow_null=True), "amount": _S.CharField(), "currency": _S.CharField(),
    "thresholds": _S.ListField(child=_S.IntegerField()), "hard_limit": _S.BooleanField(),
    "period_start": _S.DateField(), "period_end": _S.DateField(), "spent": _S.CharField(),
    "progress_pct": _S.CharField(), "status": _S.ChoiceField(choices=["ok", "warning", "exhausted"]),
    "created_at": _S.DateTimeField()})
BudgetList = inline_serializer("BudgetList", {"items": _S.ListField(child=BudgetShape), "total": _S.IntegerField()})


def budget_body(budget: Budget) -> dict:
    state = budgets.budget_state(budget)
    target = budget.department.uuid if budget.department_id else (budget.key.uuid if budget.key_id else None)
    return {"id": str(budget.uuid), "scope": budget.scope, "target_id": str(target) if target else None,
            "amount": decimal_string(budget.amount), "currency": budget.currency, "thresholds": budget.thresholds,
            "hard_limit": budget.hard_limit, "period_start": state.period.start,
            "period_end": state.period.end, "spent": decimal_string(state.spent),
            "progress_pct": str(state.progress_pct), "status": state.status, "created_at": budget.created_at}


class BudgetListCreateView(RamAPIView):
    ram_actions = {"GET": "billing:ListBudgets", "POST": "billing:CreateBudget"}
    ram_resource = whole_collection

    @aione(BudgetList)
    def get(self, request):
        items = [budget_body(budget) for budget in budgets_of(request.organization)]
        return Response({"items": items, "total": len(items)})

    @aione(BudgetShape, request=BudgetCreate, status=201)
    def post(self, request):
        data = parse_body(BudgetCreate, request)
        try:
            department, key = budgets.budget_target(request.organization, data["scope"], data["target_id"])
        except budgets.UnknownBudgetTarget as unknown:
            raise InvalidRequest([FieldProblem(["body", "target_id"], str(unknown),
                                               "value_error.not_found")]) from unknown
        budget = budgets.create_budget(actor=request_actor(request), organization=request.organization,
                                       scope=data["scope"], amount=data["amount"], department=department, key=key,
                                       thresholds=data["thresholds"], hard_limit=data["hard_limit"])
        return Response(budget_body(budget), status=status.HTTP_201_CREATED)


class BudgetDetailView(RamObjectView):
    ram_actions = {"GET": "billing:GetBudget", "PUT": "billing:UpdateBudget", "DELETE": "billing:DeleteBudget"}
    lookup_url_kwarg = "budget_id"

    def get_queryset(self):
        return budgets_of(self.request.organization)

    def ram_target_of(self, budget: Budget) -> RamTarget:
        return RamTarget(budget.pk)

    @aione(BudgetShape)
    def get(self, request, budget_id):
        return Response(budget_body(self.get_object()))

    @aione(BudgetShape, request=BudgetUpdate)
    def put(self, request, budget_id):
        data = parse_body(BudgetUpdate, request)
        budget = budgets.update_budget(actor=request_actor(request), budget=self.get_object(), **data)
        return Response(budget_body(budget))

    @aione(None, status=204)
    def delete(self, request, budget_id):
        budgets.delete_budget(actor=request_actor(request), budget=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- credit grants -----------------------------------------------------------------------------

class GrantCreate(_S.Serializer):
    org_id = _S.UUIDField()
    kind = _S.ChoiceField(choices=CreditGrant.Kind.values)
    amount = PositiveAmount()
    priority = _S.IntegerField(required=False, default=10, min_value=0, help_text="Lower is drawn first")
    expires_at = InstantField(required=False, allow_null=True, default=None)
    note = StrictCharField(required=False, default="", allow_blank=True, max_length=300)


GrantShape = inline_serializer("CreditGrant", {
    "id": _S.UUIDField(), "kind": _S.ChoiceField(choices=CreditGrant.Kind.values), "amount": _S.CharField(),
    "remaining": _S.CharField(), "currency": _S.CharField(), "priority": _S.IntegerField(),
    "expires_at": _S.DateTimeField(allow_null=True),
    "status": _S.ChoiceField(choices=CreditGrant.Status.values), "note": _S.CharField(),
    "created_at": _S.DateTimeField()})
GrantList = inline_serializer("CreditGrantList", {"items": _S.ListField(child=GrantShape), "total": _S.IntegerField()})


def grant_body(grant: CreditGrant) -> dict:
    return {"id": str(grant.uuid), "kind": grant.kind, "amount": decimal_string(grant.amount),
            "remaining": decimal_string(grant.remaining), "currency": grant.currency, "priority": grant.priority,
            "expires_at": grant.expires_at, "status": grant.status, "note": grant.note,
            "created_at": grant.created_at}


class CreditGrantView(RamAPIView):
    """Operators grant credit with the platform's service token; members list their grants."""

    ram_actions = {"GET": "billing:ListCreditGrants", "POST": "billing:CreateCreditGrant"}
    ram_resource = whole_collection

    @aione(GrantList)
    def get(self, request):
        items = [grant_body(grant) for grant in credit_grants(request.organization)]
        return Response({"items": items, "total": len(items)})

    @aione(GrantShape, request=GrantCreate, status=201,
           description="Service token only (platform operators); the grant's ledger entry is written with it.")
    def post(self, request):
        data = parse_body(GrantCreate, request)
        organization = Organization.objects.filter(uuid=data["org_id"]).first()
        if organization is None or not hasattr(organization, "billing_account"):
            raise InvalidRequest([FieldProblem(["body", "org_id"], "unknown organization", "value_error.not_found")])
        try:
            grant = grant_credit(actor=request_actor(request), organization=organization, amount=data["amount"],
                                 kind=data["kind"], note=data["note"], priority=data["priority"],
                                 expires_at=data["expires_at"])
        except ValueError as error:
            raise InvalidRequest([FieldProblem(["body", "expires_at"], str(error))]) from error
        return Response(grant_body(grant), status=status.HTTP_201_CREATED)
