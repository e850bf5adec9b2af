"""Tenancy: organizations, their departments (teams), members and groups of members.

Every tenant-owned row in the project points at an Organization; isolation is enforced by
filtering on it (selectors, the API's querysets and the admin all go through `organization`).
"""

import uuid
import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from portal.ram.system_policies import system_policy_documents


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone.")


class Organization(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    class Language(models.TextChoices):
        # The portal's languages (API.md §11); invoices and emails are written in the organization's.
        ENGLISH = "en", "English"
        CHINESE = "zh-hans", "简体中文"
        KOREAN = "ko", "한국어"
        ARABIC = "ar", "العربية"

    timezone = models.CharField(max_length=64, default="Asia/Shanghai", validators=[validate_timezone])
    language = models.CharField(max_length=16, choices=Language.choices, default=Language.ENGLISH)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Department(models.Model):
    """A team (AIone) or client (Alibaba ModelRouter): the unit keys, budgets and discounts hang on."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="departments")
    name = models.CharField(max_length=200)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    # Model codes this department may call; empty means every enabled model of the plan.
    allowed_models = models.JSONField(default=list, blank=True)
    # Multiplier on list price (0.9 = 10 % off), applied when an event is rated.
    discount = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("1"),
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("1"))],
    )
    # Requests and tokens per minute for all the department's keys together, enforced by the
    # gateway (API.md §12); empty: no department-wide limit.
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    contact_name = models.CharField(max_length=200, blank=True)
    contact_email = models.EmailField(blank=True)
    remark = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="department_name_unique_in_org"),
            models.CheckConstraint(
                condition=models.Q(discount__gte=0) & models.Q(discount__lte=1),
                name="department_discount_between_0_and_1",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def parent_errors(self, parent: "Department | None") -> list[str]:
        """Why `parent` cannot be this department's parent: another organization, or a cycle."""
        if parent is None:
            return []
        if self.organization_id and parent.organization_id != self.organization_id:
            return ["The parent department belongs to another organization."]
        seen: set[int] = set()
        node: Department | None = parent
        while node is not None:
            if self.pk is not None and node.pk == self.pk:
                return ["A department cannot be its own ancestor."]
            if node.pk in seen:  # a cycle already stored; refuse to extend it
                return ["The parent chain already contains a cycle."]
            seen.add(node.pk)
            node = node.parent
        return []

    def clean(self) -> None:
        errors = self.parent_errors(self.parent)
        if errors:
            raise ValidationError({"parent": errors})


class Member(models.Model):
    """A Django user inside one organization; owners and admins also use the Django admin.

    One user may be a member of several organizations (a consultant, a parent company's
    platform team): one Member row per organization, and the portal's switcher chooses which
    one a session acts as."""

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="members")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    # The member's portal language (API.md §11); blank follows the browser (Accept-Language).
    language = models.CharField(max_length=16, choices=Organization.Language.choices, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="member_once_per_organization"),
        ]

    def __str__(self) -> str:
        return self.user.get_username()

    @property
    def is_org_admin(self) -> bool:
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


class Group(models.Model):
    """A named set of members of one organization, to attach RAM policies to."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="member_groups")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(Member, blank=True, related_name="member_groups")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "name"]
        verbose_name = "member group"
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="group_name_unique_in_org"),
        ]

    def __str__(self) -> str:
        return self.name


class AuditLog(models.Model):
    """Append-only record of who changed what, when and from where."""

    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="audit_logs"
    )
    actor = models.ForeignKey(Member, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # Who acted when no member did (a superuser's username, "system", a service token's name).
    actor_label = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=100)
    target_type = models.CharField(max_length=50)
    target_id = models.CharField(max_length=64)
    # The object's name when the change was made (API.md §11: the audit page names objects), kept
    # because the object itself may since have been renamed or deleted.
    target_name = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    source_ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="audit_org_created")]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target_type}/{self.target_id}"


class Policy(models.Model):
    """A RAM policy. System policies (no organization) are shared by every organization and their
    documents are derived from the action registry; custom policies belong to one organization."""

    class Type(models.TextChoices):
        SYSTEM = "system"
        CUSTOM = "custom"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="policies"
    )
    name = models.CharField(max_length=128)
    description = models.CharField(max_length=1024, blank=True)
    policy_type = models.CharField(max_length=16, choices=Type.choices, default=Type.CUSTOM)
    document = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["policy_type", "name"]
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="policy_name_unique_in_org"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(organization__isnull=True), name="system_policy_name_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def effective_document(self) -> dict:
        if self.policy_type == self.Type.SYSTEM:
            return system_policy_documents().get(self.name, ("", self.document))[1]
        return self.document


class PolicyAttachment(models.Model):
    """A policy attached to one member or one group of an organization."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="policy_attachments")
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="attachments")
    member = models.ForeignKey(
        Member, null=True, blank=True, on_delete=models.CASCADE, related_name="policy_attachments"
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="policy_attachments")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "policy"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(member__isnull=False, group__isnull=True)
                           | models.Q(member__isnull=True, group__isnull=False)),
                name="attachment_has_member_xor_group",
            ),
            models.UniqueConstraint(fields=["policy", "member"], name="policy_attached_once_per_member"),
            models.UniqueConstraint(fields=["policy", "group"], name="policy_attached_once_per_group"),
        ]

    def __str__(self) -> str:
        return f"{self.policy} → {self.member or self.group}"
