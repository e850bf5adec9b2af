"""The AIone key API (`/api/v1/gateway/keys`) and the gateway's verify endpoint. Thin: parse,
authorize, call a service, render."""

from datetime import timedelta
from functools import cached_property

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from billing.budgets import budget_exhausted
from keys import services
from keys.api.serializers import (
    KeyCreateRequest,
    KeyCreateResponse,
    KeyListQuery,
    KeyResponse,
    KeyUpdateRequest,
    RotateQuery,
    VerifyRequest,
)
from keys.models import InferenceKey
from keys.selectors import live_keys
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.permissions import RamTarget, decided_method, narrowed_list, whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, RamObjectView, parse_body, parse_query
from portal.api.views import request_actor as actor_of
from portal.models import Department
from portal.selectors import department_in

KeyListResponse = inline_serializer("KeyListResponse", {
    "items": KeyResponse(many=True), "total": serializers.IntegerField(), "page": serializers.IntegerField(),
    "page_size": serializers.IntegerField()})
KeyRotateResponse = inline_serializer("KeyRotateResponse", {
    "id": serializers.UUIDField(), "key": serializers.CharField(), "key_prefix": serializers.CharField(),
    "old_key_prefix": serializers.CharField(), "rotate_grace_until": serializers.DateTimeField(allow_null=True)})
VerifyResponse = inline_serializer("KeyVerifyResponse", {
    "valid": serializers.BooleanField(), "key_id": serializers.UUIDField(required=False),
    "org_id": serializers.UUIDField(required=False), "team_id": serializers.UUIDField(required=False),
    "status": serializers.CharField(required=False),
    "models_allowed": serializers.ListField(child=serializers.CharField(), required=False),
    "allowed_ips": serializers.ListField(child=serializers.CharField(), required=False),
    "rpm_limit": serializers.IntegerField(allow_null=True, required=False),
    "tpm_limit": serializers.IntegerField(allow_null=True, required=False),
    "budget_exhausted": serializers.BooleanField(required=False)})


class TeamOfNewKey(serializers.Serializer):
    team_id = serializers.UUIDField()


class OrganizationKeys:
    def get_queryset(self):
        return live_keys(self.request.organization)

    def ram_target_of(self, key: InferenceKey) -> RamTarget:
        return RamTarget(key.pk, key.department_id)


class KeyListCreateView(OrganizationKeys, RamAPIView):
    ram_actions = {"GET": "keys:ListKeys", "POST": "keys:CreateKey"}

    def ram_resource(self, request):
        if decided_method(request) == "GET":
            return narrowed_list(self, request)
        # A new key is checked against the department it is created in, before the rest of the
        # body is validated (a caller who may not create keys learns nothing about the catalog).
        return (RamTarget("*", self.department.pk),)

    @cached_property
    def department(self) -> Department:
        team_id = parse_body(TeamOfNewKey, self.request)["team_id"]
        department = department_in(self.request.organization, uuid=team_id)
        if department is None:
            raise InvalidRequest([FieldProblem(["body", "team_id"], "unknown team", "value_error.not_found")])
        return department

    @aione(KeyListResponse, parameters=[KeyListQuery])
    def get(self, request):
        query = parse_query(KeyListQuery, request)
        keys = self.queryset.order_by("-created_at", "-id")
        if "team_id" in query:
            keys = keys.filter(department__uuid=query["team_id"])
        if "status" in query:
            keys = keys.filter(status=query["status"])
        start = (query["page"] - 1) * query["page_size"]
        page = keys[start : start + query["page_size"]]
        return Response({"items": KeyResponse(page, many=True).data, "total": keys.count(),
                         "page": query["page"], "page_size": query["page_size"]})

    @aione(KeyCreateResponse, request=KeyCreateRequest, status=201,
           description="Create an inference key; the response carries the secret `key`, shown this once.")
    def post(self, request):
        data = parse_body(KeyCreateRequest, request)
        issued = services.create_inference_key(
            actor=actor_of(request), department=self.department, owner=request.member, name=data["name"],
            models_allowed=data["models_allowed"], allowed_ips=data["allowed_ips"], rpm_limit=data["rpm_limit"],
            tpm_limit=data["tpm_limit"], is_sandbox=data["is_sandbox"], expires_at=data["expires_at"],
        )
        body = KeyResponse(issued.key).data
        body["key"] = issued.secret  # the only time the secret is ever shown
        return Response(body, status=status.HTTP_201_CREATED)


class KeyObjectView(OrganizationKeys, RamObjectView):
    lookup_url_kwarg = "key_id"


class KeyDetailView(KeyObjectView):
    ram_actions = {"GET": "keys:GetKey", "PUT": "keys:UpdateKey", "DELETE": "keys:DeleteKey"}

    @aione(KeyResponse)
    def get(self, request, key_id):
        return Response(KeyResponse(self.get_object()).data)

    @aione(KeyResponse, request=KeyUpdateRequest)
    def put(self, request, key_id):
        changes = parse_body(KeyUpdateRequest, request)
        key = services.update_inference_key(actor=actor_of(request), key=self.get_object(), **changes)
        return Response(KeyResponse(key).data)

    @aione(None, status=204, description="Irreversible; the key's usage history stays.")
    def delete(self, request, key_id):
        services.delete_inference_key(actor=actor_of(request), key=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class KeyRotateView(KeyObjectView):
    ram_actions = {"PUT": "keys:RotateKey"}

    @aione(KeyRotateResponse, parameters=[RotateQuery])
    def put(self, request, key_id):
        key = self.get_object()
        grace = timedelta(hours=parse_query(RotateQuery, request)["grace_hours"])
        old_prefix = key.key_prefix
        issued = services.rotate_inference_key(actor=actor_of(request), key=key, grace=grace)
        return Response({"id": str(key.uuid), "key": issued.secret, "key_prefix": issued.key.key_prefix,
                         "old_key_prefix": old_prefix, "rotate_grace_until": issued.key.rotate_grace_until})


class KeyDisableView(KeyObjectView):
    ram_actions = {"PUT": "keys:DisableKey"}

    @aione(KeyResponse)
    def put(self, request, key_id):
        key = services.disable_inference_key(actor=actor_of(request), key=self.get_object())
        return Response(KeyResponse(key).data)


class KeyEnableView(KeyObjectView):
    ram_actions = {"PUT": "keys:EnableKey"}

    @aione(KeyResponse)
    def put(self, request, key_id):
        try:
            key = services.enable_inference_key(actor=actor_of(request), key=self.get_object())
        except ValueError as error:
            raise InvalidRequest([FieldProblem(["path", "key_id"], str(error))], status_code=409) from error
        return Response(KeyResponse(key).data)


class VerifyKeyView(RamAPIView):
    """The gateway asks whether a presented inference key may call models (service token only)."""

    ram_actions = {"POST": "keys:VerifyKey"}
    ram_resource = whole_collection

    @aione(VerifyResponse, request=VerifyRequest)
    def post(self, request):
        secret = parse_body(VerifyRequest, request)["key"]
        return Response(services.verify_inference_key(secret, budget_exhausted=budget_exhausted))
