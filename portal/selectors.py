"""Reads for tenancy."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from portal.models import AuditLog, Department, Group, Member, Organization, Policy, PolicyAttachment


def member_of(user: AbstractBaseUser | AnonymousUser | None, organization_id: int | None = None) -> Member | None:
    """The member record a logged-in user acts as, or None (anonymous, or a platform superuser).

    A user may belong to several organizations: `organization_id` (the one the session chose)
    picks among them, and without it (or when it names an organization the user has left) the
    oldest membership is taken."""
    if user is None or not user.is_authenticated:
        return None
    memberships = Member.objects.filter(user=user).select_related("organization", "user").order_by("pk")
    if organization_id is not None:
        chosen = memberships.filter(organization_id=organization_id).first()
        if chosen is not None:
            return chosen
    return memberships.first()


def memberships_of(user: AbstractBaseUser | AnonymousUser | None) -> list[Member]:
    """Every organization a user belongs to, for the portal's switcher."""
    if user is None or not user.is_authenticated:
        return []
    return list(Member.objects.filter(user=user).select_related("organization").order_by("organization__name"))


def department_in(organization: Organization, **lookup: Any) -> Department | None:
    """A department of `organization` (another organization's is simply not there)."""
    return Department.objects.filter(organization=organization, **lookup).first()


def audit_trail(organization: Organization, *, before_id: int | None = None, limit: int = 50,
                **filters: str) -> list[AuditLog]:
    """The organization's audit entries, newest first, `limit` at a time: a keyset walk
    (`before_id`, the last id of the previous page), never an OFFSET. `filters` narrow by
    target_type, target_id, action (prefix) or actor_label."""
    entries = AuditLog.objects.filter(organization=organization).select_related("actor__user")
    if before_id is not None:
        entries = entries.filter(pk__lt=before_id)
    for field in ("target_type", "target_id", "actor_label"):
        if filters.get(field):
            entries = entries.filter(**{field: filters[field]})
    if filters.get("action"):
        entries = entries.filter(action__startswith=filters["action"])
    return list(entries.order_by("-pk")[:limit])


# --- RAM: policies and the principals they are attached to (the API's ram views and the Access pages)

def visible_policies(organization: Organization) -> QuerySet[Policy]:
    """The policies an organization sees: the shared system policies and its own custom ones
    (another organization's policy is simply not there)."""
    return Policy.objects.filter(Q(organization__isnull=True) | Q(organization=organization))


def members_with_policies(organization: Organization) -> QuerySet[Member]:
    """The organization's members with their groups and directly attached policies, prefetched."""
    return (Member.objects.filter(organization=organization).select_related("user")
            .prefetch_related("member_groups", "policy_attachments__policy").order_by("user__username"))


def groups_with_policies(organization: Organization) -> QuerySet[Group]:
    """The organization's groups with their members and attached policies, prefetched."""
    return (Group.objects.filter(organization=organization)
            .prefetch_related("members__user", "policy_attachments__policy").order_by("name"))


def attachments_of(policy: Policy, organization: Organization) -> list[PolicyAttachment]:
    """Whom `policy` is attached to within `organization`: a system policy is shared by every
    organization, so only this one's attachments are its business."""
    return list(PolicyAttachment.objects.filter(policy=policy, organization=organization)
                .select_related("member__user", "group").order_by("group__name", "member__user__username"))
