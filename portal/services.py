"""Writes for tenancy: organizations, departments, members, groups, and the audit trail.

Every function here is keyword-only, atomic, and leaves an audit row for what it changed.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from portal.models import AuditLog, Department, Group, Member, Organization


@dataclass(frozen=True)
class Actor:
    """Who performs a write: a member, or the platform (superuser, command, job)."""

    member: Member | None = None
    label: str = "system"
    source_ip: str | None = None

    @classmethod
    def for_member(cls, member: Member, source_ip: str | None = None) -> "Actor":
        return cls(member=member, label=member.user.get_username(), source_ip=source_ip)


SYSTEM = Actor()


def record_audit(
    *,
    actor: Actor,
    organization: Organization | None,
    action: str,
    target: Any,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    return AuditLog.objects.create(
        organization=organization,
        actor=actor.member,
        actor_label=actor.label,
        action=action,
        target_type=type(target).__name__.lower(),
        target_id=str(getattr(target, "pk", target)),
        target_name=str(target)[:200] if hasattr(target, "pk") else "",
        detail=detail or {},
        source_ip=actor.source_ip,
    )


@transaction.atomic
def create_organization(*, actor: Actor, name: str, slug: str, timezone: str = "Asia/Shanghai") -> Organization:
    organization = Organization(name=name, slug=slug, timezone=timezone)
    organization.full_clean()
    organization.save()
    record_audit(actor=actor, organization=organization, action="organization.create", target=organization)
    return organization


@transaction.atomic
def create_department(
    *,
    actor: Actor,
    organization: Organization,
    name: str,
    parent: Department | None = None,
    discount: Decimal = Decimal("1"),
    allowed_models: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    contact_name: str = "",
    contact_email: str = "",
    remark: str = "",
) -> Department:
    department = Department(
        organization=organization,
        name=name,
        parent=parent,
        discount=discount,
        allowed_models=allowed_models or [],
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        contact_name=contact_name,
        contact_email=contact_email,
        remark=remark,
    )
    department.full_clean()
    department.save()
    record_audit(actor=actor, organization=organization, action="department.create", target=department)
    return department


@transaction.atomic
def move_department(*, actor: Actor, department: Department, parent: Department | None) -> Department:
    # Lock the rows being re-linked so two concurrent moves cannot build a cycle between them.
    locked = Department.objects.select_for_update().get(pk=department.pk)
    locked.parent = parent
    locked.full_clean()
    locked.save(update_fields=["parent"])
    record_audit(
        actor=actor,
        organization=locked.organization,
        action="department.move",
        target=locked,
        detail={"parent": parent.pk if parent else None},
    )
    return locked


def _sync_staff_flag(member: Member) -> None:
    # Owners and admins manage their organization in the Django admin; members never do.
    user = member.user
    if not user.is_superuser and user.is_staff != member.is_org_admin:
        user.is_staff = member.is_org_admin
        user.save(update_fields=["is_staff"])


@transaction.atomic
def create_member(
    *,
    actor: Actor,
    organization: Organization,
    username: str,
    password: str | None,
    role: str = Member.Role.MEMBER,
    email: str = "",
) -> Member:
    user = get_user_model().objects.create_user(username=username, email=email, password=password)
    member = Member.objects.create(user=user, organization=organization, role=role)
    _sync_staff_flag(member)
    record_audit(
        actor=actor, organization=organization, action="member.create", target=member, detail={"role": role}
    )
    return member


@transaction.atomic
def add_membership(*, actor: Actor, organization: Organization, user, role: str = Member.Role.MEMBER) -> Member:
    """An existing user joins another organization (a consultant, a parent company's platform
    team); the portal's switcher then offers both."""
    member = Member.objects.create(user=user, organization=organization, role=role)
    _sync_staff_flag(member)
    record_audit(
        actor=actor, organization=organization, action="member.create", target=member, detail={"role": role}
    )
    return member


@transaction.atomic
def set_member_role(*, actor: Actor, member: Member, role: str) -> Member:
    previous = member.role
    member.role = role
    member.save(update_fields=["role"])
    _sync_staff_flag(member)
    record_audit(
        actor=actor,
        organization=member.organization,
        action="member.set_role",
        target=member,
        detail={"from": previous, "to": role},
    )
    return member


@transaction.atomic
def create_group(
    *, actor: Actor, organization: Organization, name: str, members: list[Member] | None = None
) -> Group:
    group = Group.objects.create(organization=organization, name=name)
    if members:
        group.members.set(members)
    record_audit(actor=actor, organization=organization, action="group.create", target=group)
    return group
