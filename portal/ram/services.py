"""The Django side of RAM: which policies apply to a member, the decision for a request, and
the writes that change policies and their attachments (each audited).

The evaluation itself is `portal.ram.evaluator.evaluate`, plain Python; this module only
gathers the policies and the request.
"""

from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from portal.models import Group, Member, Organization, Policy, PolicyAttachment
from portal.ram import evaluator
from portal.ram.actions import ACTIONS, Action, scope_allows
from portal.ram.system_policies import ADMINISTRATOR_ACCESS
from portal.services import Actor, record_audit

# What a policy name may be (the API's request field and the portal's form both check it): it
# is spelled in URLs (`/api/v1/ram/policies/<name>`) and in RAM resources (`policy/<name>`).
POLICY_NAME_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"


class PolicyError(ValueError):
    """A policy write was refused; `errors` says why (names the offending part)."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


# Compiled policies by (id, last update): a policy is compiled once per change, not per request.
_compiled: dict[tuple[int, Any], evaluator.CompiledPolicy] = {}


def _compiled_policy(row: Policy) -> evaluator.CompiledPolicy:
    version = (row.pk, row.updated_at)
    compiled = _compiled.get(version)
    if compiled is None:
        if len(_compiled) > 10_000:
            _compiled.clear()
        compiled = _compiled[version] = evaluator.compile_policy(evaluator.Policy(row.name, row.effective_document))
    return compiled


def effective_policies(member: Member) -> list[evaluator.CompiledPolicy]:
    """Every policy that applies to `member`: attached directly, through a group, and, for the
    owner, AdministratorAccess (an organization can never lock its owner out)."""
    rows = Policy.objects.filter(
        Q(attachments__member=member) | Q(attachments__group__members=member)
    ).distinct()
    policies = {row.name: _compiled_policy(row) for row in rows}
    if member.role == Member.Role.OWNER and ADMINISTRATOR_ACCESS not in policies:
        policies[ADMINISTRATOR_ACCESS] = _compiled_policy(system_policy(ADMINISTRATOR_ACCESS))
    return list(policies.values())


def authorize(
    *,
    member: Member,
    action: Action,
    resource: str,
    context: Mapping[str, Any],
    scopes: list[str] | tuple[str, ...] = (),
    policies: list[evaluator.CompiledPolicy] | None = None,
) -> evaluator.Decision:
    """The decision for `member` (acting through a key with `scopes`, if any)."""
    if not scope_allows(scopes, action):
        return evaluator.Decision(evaluator.DECISION_IMPLICIT_DENY, ())
    if policies is None:
        policies = effective_policies(member)
    return evaluator.evaluate(policies, evaluator.AccessRequest(action.name, resource, dict(context)))


def simulate(
    *, member: Member, action_name: str, resource: str, context: Mapping[str, Any]
) -> evaluator.Decision:
    """The policy simulator (API.md §8), for the API's `POST /ram/simulate` and the portal's page
    alike: the decision `member` would get for `action_name` on `resource` in `context`, with the
    statements that decided it. It answers for the member's own policies, never narrowed by a
    key's scopes: it is the member who is being simulated, not one of their keys."""
    action = ACTIONS.get(action_name)
    if action is None:
        raise PolicyError(["action: unknown action"])
    return authorize(member=member, action=action, resource=resource, context=context)


def _validated(document: Any) -> dict[str, Any]:
    try:
        evaluator.validate_policy_document(document)
    except evaluator.PolicyValidationError as error:
        raise PolicyError(error.errors) from error
    return document


def _check_name(organization: Organization, name: str, exclude_pk: int | None = None) -> None:
    if not name or len(name) > 128:
        raise PolicyError(["name: must be 1 to 128 characters"])
    clash = Policy.objects.filter(Q(organization=organization) | Q(organization__isnull=True), name=name)
    if exclude_pk:
        clash = clash.exclude(pk=exclude_pk)
    if clash.exists():
        raise PolicyError([f"name: a policy named {name!r} already exists"])


@transaction.atomic
def create_policy(
    *, actor: Actor, organization: Organization, name: str, document: Any, description: str = ""
) -> Policy:
    _check_name(organization, name)
    policy = Policy.objects.create(
        organization=organization, name=name, description=description, document=_validated(document),
        policy_type=Policy.Type.CUSTOM,
    )
    record_audit(actor=actor, organization=organization, action="policy.create", target=policy,
                 detail={"name": name, "document": document})
    return policy


def _custom(policy: Policy) -> Policy:
    if policy.policy_type == Policy.Type.SYSTEM:
        raise PolicyError([f"{policy.name}: system policies cannot be changed or deleted"])
    return policy


@transaction.atomic
def update_policy(
    *, actor: Actor, policy: Policy, document: Any = None, description: str | None = None,
) -> Policy:
    _custom(policy)
    changes: dict[str, Any] = {}
    if document is not None:
        policy.document = _validated(document)
        changes["document"] = document
    if description is not None:
        policy.description = description
        changes["description"] = description
    policy.save()
    record_audit(actor=actor, organization=policy.organization, action="policy.update", target=policy,
                 detail=changes)
    return policy


@transaction.atomic
def delete_policy(*, actor: Actor, policy: Policy) -> None:
    _custom(policy)
    record_audit(actor=actor, organization=policy.organization, action="policy.delete", target=policy,
                 detail={"name": policy.name, "document": policy.document})
    policy.delete()


@transaction.atomic
def attach_policy(
    *, actor: Actor, policy: Policy, member: Member | None = None, group: Group | None = None
) -> PolicyAttachment:
    principal = member or group
    if principal is None or (member and group):
        raise PolicyError(["attach: name exactly one member or one group"])
    if policy.organization_id not in (None, principal.organization_id):
        raise PolicyError(["policy: belongs to another organization"])
    try:
        with transaction.atomic():
            attachment = PolicyAttachment.objects.create(
                organization=principal.organization, policy=policy, member=member, group=group
            )
    except IntegrityError:
        attachment = PolicyAttachment.objects.get(policy=policy, member=member, group=group)
        return attachment  # attaching twice is a no-op
    record_audit(actor=actor, organization=principal.organization, action="policy.attach", target=policy,
                 detail={"member": str(member.uuid) if member else None, "group": str(group.uuid) if group else None})
    return attachment


@transaction.atomic
def detach_policy(*, actor: Actor, policy: Policy, member: Member | None = None, group: Group | None = None) -> int:
    deleted, _ = PolicyAttachment.objects.filter(policy=policy, member=member, group=group).delete()
    organization = (member or group).organization if (member or group) else policy.organization
    if deleted:
        record_audit(actor=actor, organization=organization, action="policy.detach", target=policy,
                     detail={"member": str(member.uuid) if member else None,
                             "group": str(group.uuid) if group else None})
    return deleted


def system_policy(name: str) -> Policy:
    return Policy.objects.get(organization__isnull=True, name=name)
