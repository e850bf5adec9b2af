"""Members' management keys (API.md §8): `GET/POST /api/v1/ram/members/{uuid}/management-keys` and
`PUT .../management-keys/{id}/revoke`. RAM actions on the member (`member/<id>`); the secret is
shown once, at creation."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from keys import services
from keys.models import ManagementKey
from portal.api.fields import InstantField, StrictCharField
from portal.api.permissions import RamTarget
from portal.api.schema import aione
from portal.api.views import RamObjectView, parse_body, request_actor
from portal.models import Member

_S = serializers
ManagementKeyShape = inline_serializer("ManagementKey", {
    "id": _S.IntegerField(), "uuid": _S.UUIDField(), "name": _S.CharField(), "display": _S.CharField(),
    "scopes": _S.ListField(child=_S.CharField()), "status": _S.CharField(),
    "expires_at": _S.DateTimeField(allow_null=True), "created_at": _S.DateTimeField(),
    "last_used_at": _S.DateTimeField(allow_null=True)})
ManagementKeyCreated = inline_serializer("ManagementKeyCreated", {
    "api_key": _S.CharField(), "id": _S.IntegerField(), "display": _S.CharField(),
    "scopes": _S.ListField(child=_S.CharField()), "status": _S.CharField(), "created_at": _S.DateTimeField()})
ManagementKeyList = inline_serializer("ManagementKeyList", {"items": _S.ListField(child=ManagementKeyShape)})


class ManagementKeyCreate(serializers.Serializer):
    name = StrictCharField(max_length=200)
    scopes = serializers.ListField(child=serializers.RegexField(r"^[a-z]+:(read|write)$|^\*$"), required=False,
                                   default=list)
    expires_at = InstantField(required=False, allow_null=True, default=None)


def _management_key_body(key: ManagementKey) -> dict:
    return {"id": key.pk, "uuid": str(key.uuid), "name": key.name, "display": key.key_prefix + "…",
            "scopes": key.scopes, "status": key.status, "expires_at": key.expires_at,
            "created_at": key.created_at, "last_used_at": key.last_used_at}


class MemberKeysView(RamObjectView):
    """The member named in the URL, within the caller's organization."""

    lookup_url_kwarg = "member_uuid"

    def get_queryset(self):
        return Member.objects.filter(organization=self.request.organization)

    def ram_target_of(self, member: Member) -> RamTarget:
        return RamTarget(member.pk)


class ManagementKeyListCreateView(MemberKeysView):
    ram_actions = {"GET": "ram:ListManagementKeys", "POST": "ram:CreateManagementKey"}

    @aione(ManagementKeyList)
    def get(self, request, member_uuid):
        return Response({"items": [_management_key_body(k) for k in self.get_object().management_keys.all()]})

    @aione(ManagementKeyCreated, request=ManagementKeyCreate, status=201)
    def post(self, request, member_uuid):
        data = parse_body(ManagementKeyCreate, request)
        issued = services.create_management_key(actor=request_actor(request), member=self.get_object(),
                                                name=data["name"], scopes=data["scopes"],
                                                expires_at=data["expires_at"])
        body = _management_key_body(issued.key)
        body["api_key"] = issued.secret  # shown this once
        return Response(body, status=status.HTTP_201_CREATED)


class ManagementKeyRevokeView(MemberKeysView):
    ram_actions = {"PUT": "ram:RevokeManagementKey"}

    @aione(ManagementKeyShape)
    def put(self, request, member_uuid, key_id):
        key = get_object_or_404(ManagementKey, member=self.get_object(), pk=key_id)
        return Response(_management_key_body(services.revoke_management_key(actor=request_actor(request), key=key)))
