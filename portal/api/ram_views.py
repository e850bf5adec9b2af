"""RAM management API (API.md §8): actions, policies, attachments, members, management keys,
and the simulator. Thin views over portal.ram.services."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.fields import StrictCharField
from portal.api.permissions import RamTarget, request_context, whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, RamObjectView, parse_body
from portal.api.views import request_actor as _actor
from portal.models import Group, Member, Policy
from portal.ram import services as ram
from portal.ram.actions import member_actions
from portal.selectors import members_with_policies, visible_policies


def _policy_errors(error: ram.PolicyError) -> InvalidRequest:
    return InvalidRequest([FieldProblem(["body", "document"], message) for message in error.errors])


class PolicyObjectView(RamObjectView):
    """A policy named in the URL; RAM resources name policies by name (`policy/ReadOnlyAccess`)."""

    lookup_url_kwarg = lookup_field = "name"

    def get_queryset(self):
        return visible_policies(self.request.organization)

    def ram_target_of(self, policy: Policy) -> RamTarget:
        return RamTarget(policy.name)


def _policy_body(policy: Policy) -> dict:
    return {"id": policy.pk, "uuid": str(policy.uuid), "name": policy.name, "description": policy.description,
            "type": policy.policy_type, "document": policy.effective_document,
            "created_at": policy.created_at, "updated_at": policy.updated_at}


def _shape(component: str, **fields) -> serializers.Serializer:
    return inline_serializer(component, fields)


_S = serializers
ActionShape = _shape("RamAction", action=_S.CharField(), access_level=_S.CharField(),
                     resource_types=_S.ListField(child=_S.CharField()), resource=_S.CharField(),
                     condition_keys=_S.ListField(child=_S.CharField()), scope=_S.CharField(),
                     description=_S.CharField(), dependent_actions=_S.ListField(child=_S.CharField()))
PolicyShape = _shape("RamPolicy", id=_S.IntegerField(), uuid=_S.UUIDField(), name=_S.CharField(),
                     description=_S.CharField(), type=_S.ChoiceField(choices=["system", "custom"]),
                     document=_S.JSONField(), created_at=_S.DateTimeField(), updated_at=_S.DateTimeField())
AttachShape = _shape("RamAttachment", policy=_S.CharField(), member=_S.UUIDField(allow_null=True),
                     group=_S.UUIDField(allow_null=True), attached=_S.BooleanField())
MemberShape = _shape("RamMember", uuid=_S.UUIDField(), username=_S.CharField(), role=_S.CharField(),
                     groups=_S.ListField(child=_S.DictField()), policies=_S.ListField(child=_S.CharField()))
SimulateShape = _shape("RamSimulation", decision=_S.ChoiceField(choices=["Allow", "ImplicitDeny", "ExplicitDeny"]),
                       matched=_S.ListField(child=_S.DictField()))


def _items(name: str, item) -> serializers.Serializer:
    return inline_serializer(name, {"items": _S.ListField(child=item)})


class ActionListView(RamAPIView):
    ram_actions = {"GET": "ram:ListActions"}
    ram_resource = whole_collection

    @aione(_items("RamActionList", ActionShape))
    def get(self, request):
        return Response({"items": [
            {"action": a.name, "access_level": a.access_level, "resource_types": [a.resource_type],
             "resource": a.resource("<org_id>", f"<{a.resource_type}_id>"), "condition_keys": list(a.condition_keys),
             "scope": a.scope, "description": a.description, "dependent_actions": []}
            for a in member_actions()
        ]})


class PolicyCreate(serializers.Serializer):
    name = serializers.RegexField(ram.POLICY_NAME_PATTERN)
    description = StrictCharField(max_length=1024, required=False, default="", allow_blank=True)
    document = serializers.JSONField()


class PolicyUpdate(serializers.Serializer):
    description = StrictCharField(max_length=1024, required=False, allow_blank=True)
    document = serializers.JSONField(required=False)


class PolicyListCreateView(RamAPIView):
    ram_actions = {"GET": "ram:ListPolicies", "POST": "ram:CreatePolicy"}
    ram_resource = whole_collection

    @aione(_items("RamPolicyList", PolicyShape))
    def get(self, request):
        return Response({"items": [_policy_body(p) for p in visible_policies(request.organization)]})

    @aione(PolicyShape, request=PolicyCreate, status=201)
    def post(self, request):
        data = parse_body(PolicyCreate, request)
        try:
            policy = ram.create_policy(actor=_actor(request), organization=request.organization,
                                       name=data["name"], document=data["document"], description=data["description"])
        except ram.PolicyError as error:
            raise _policy_errors(error) from error
        return Response(_policy_body(policy), status=status.HTTP_201_CREATED)


class PolicyDetailView(PolicyObjectView):
    ram_actions = {"GET": "ram:GetPolicy", "PUT": "ram:UpdatePolicy", "DELETE": "ram:DeletePolicy"}

    @aione(PolicyShape)
    def get(self, request, name):
        return Response(_policy_body(self.get_object()))

    @aione(PolicyShape, request=PolicyUpdate, description="A system policy is immutable: changing it is 422.")
    def put(self, request, name):
        data = parse_body(PolicyUpdate, request)
        try:
            policy = ram.update_policy(actor=_actor(request), policy=self.get_object(), document=data.get("document"),
                                       description=data.get("description"))
        except ram.PolicyError as error:
            raise _policy_errors(error) from error
        return Response(_policy_body(policy))

    @aione(None, status=204, description="A system policy is immutable: deleting it is 422.")
    def delete(self, request, name):
        try:
            ram.delete_policy(actor=_actor(request), policy=self.get_object())
        except ram.PolicyError as error:
            raise _policy_errors(error) from error
        return Response(status=status.HTTP_204_NO_CONTENT)


def _one_of(*names: str) -> dict:
    """A body naming exactly one of `names`, as a uuid (what AttachTarget.validate enforces): a body
    with both matches both alternatives, which oneOf refuses."""
    return {"application/json": {"oneOf": [
        {"type": "object", "properties": {name: {"type": "string", "format": "uuid"}}, "required": [name]}
        for name in names]}}


class AttachTarget(serializers.Serializer):
    member = serializers.UUIDField(required=False)
    group = serializers.UUIDField(required=False)

    def validate(self, attrs):
        if ("member" in attrs) == ("group" in attrs):
            raise serializers.ValidationError("name exactly one of member or group")
        return attrs


class PolicyAttachView(PolicyObjectView):
    ram_actions = {"POST": "ram:AttachPolicy"}
    attach = True

    @aione(AttachShape, request=_one_of("member", "group"))
    def post(self, request, name):
        policy = self.get_object()
        target = parse_body(AttachTarget, request)
        member = group = None
        if "member" in target:
            member = get_object_or_404(Member, organization=request.organization, uuid=target["member"])
        else:
            group = get_object_or_404(Group, organization=request.organization, uuid=target["group"])
        if self.attach:
            ram.attach_policy(actor=_actor(request), policy=policy, member=member, group=group)
        else:
            ram.detach_policy(actor=_actor(request), policy=policy, member=member, group=group)
        return Response({"policy": policy.name, "member": str(member.uuid) if member else None,
                         "group": str(group.uuid) if group else None, "attached": self.attach})


class PolicyDetachView(PolicyAttachView):
    ram_actions = {"POST": "ram:DetachPolicy"}
    attach = False


class MemberListView(RamAPIView):
    ram_actions = {"GET": "ram:ListMembers"}
    ram_resource = whole_collection

    @aione(_items("RamMemberList", MemberShape))
    def get(self, request):
        members = members_with_policies(request.organization)
        return Response({"items": [
            {"uuid": str(m.uuid), "username": m.user.get_username(), "role": m.role,
             "groups": [{"uuid": str(g.uuid), "name": g.name} for g in m.member_groups.all()],
             "policies": [a.policy.name for a in m.policy_attachments.all()]}
            for m in members
        ]})


class SimulateRequest(serializers.Serializer):
    member = serializers.UUIDField()
    action = StrictCharField(max_length=200)
    resource = StrictCharField(max_length=1024)
    context = serializers.DictField(required=False, default=dict)


class SimulateView(RamAPIView):
    ram_actions = {"POST": "ram:SimulatePolicy"}
    ram_resource = whole_collection

    @aione(SimulateShape, request=SimulateRequest)
    def post(self, request):
        data = parse_body(SimulateRequest, request)
        member = get_object_or_404(Member, organization=request.organization, uuid=data["member"])
        # The simulated request carries the caller's network facts unless the body overrides them.
        context = {**request_context(request), **data["context"]}
        try:
            decision = ram.simulate(member=member, action_name=data["action"], resource=data["resource"],
                                    context=context)
        except ram.PolicyError as error:
            raise InvalidRequest([FieldProblem(["body", "action"], "unknown action")]) from error
        return Response({"decision": decision.effect,
                         "matched": [{"policy": m.policy, "statement": m.index, "sid": m.sid, "effect": m.effect}
                                     for m in decision.matched]})
