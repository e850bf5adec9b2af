"""Credentials: inference keys (applications calling models), management keys (members
calling the management API) and service tokens (the platform's own gateway)."""

import uuid

from django.db import models
from django.utils import timezone

from portal.models import Department, Member, Organization


class KeyStatus(models.TextChoices):
    ACTIVE = "active"
    DISABLED = "disabled"
    EXPIRED = "expired"
    REVOKED = "revoked"


class CredentialFields(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    key_prefix = models.CharField(max_length=32, editable=False)
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=KeyStatus.choices, default=KeyStatus.ACTIVE)
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix}…)"


class InferenceKey(CredentialFields):
    """An application's key for the gateway, owned by a department."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="inference_keys")
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="inference_keys")
    # The member who created the key; usage by this key is attributed to them.
    owner = models.ForeignKey(
        Member, null=True, blank=True, on_delete=models.SET_NULL, related_name="inference_keys"
    )
    models_allowed = models.JSONField(default=list, blank=True)
    allowed_ips = models.JSONField(default=list, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveIntegerField(null=True, blank=True)
    is_sandbox = models.BooleanField(default=False)
    # After a rotation the previous secret keeps working until rotate_grace_until.
    # NULL, not "", when there is no previous secret: an empty hash must never match anything.
    previous_secret_hash = models.CharField(  # noqa: DJ001
        max_length=64, null=True, blank=True, editable=False, db_index=True
    )
    previous_key_prefix = models.CharField(max_length=32, blank=True, editable=False)
    rotate_grace_until = models.DateTimeField(null=True, blank=True, editable=False)
    # Deleting a key hides it for good but keeps the row, so its usage history stays attributable.
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["organization", "department", "name"]
        indexes = [models.Index(fields=["organization", "status"], name="inferencekey_org_status")]

    @property
    def effective_status(self) -> str:
        """The status as the gateway applies it: a key past its expiry is expired, whatever the row says."""
        if self.status == KeyStatus.ACTIVE and self.expires_at and self.expires_at <= timezone.now():
            return KeyStatus.EXPIRED
        return self.status


class ManagementKey(CredentialFields):
    """A member's key for the management API; acts with the member's policies, narrowed by scopes."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="management_keys")
    scopes = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["member", "name"]


class ServiceToken(CredentialFields):
    """The platform's own credential (the LLM gateway): ingestion and key verification."""

    class Meta:
        ordering = ["name"]


class Upstream(models.Model):
    """An OpenAI-compatible provider the gateway forwards calls to, configured by operators (a
    platform object, like a service token: it belongs to no organization).

    The provider's API key is kept encrypted (keys.encryption, Fernet under FIELD_ENCRYPTION_KEY):
    the gateway must present it, so it cannot be hashed; no page or answer ever shows it again."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, unique=True)
    base_url = models.URLField(max_length=500, help_text="An OpenAI-compatible API base, e.g. https://host/v1")
    api_key_encrypted = models.TextField(editable=False)
    # Model codes of the catalog (billing.Model) this upstream serves; each code has one upstream.
    model_codes = models.JSONField(default=list, blank=True)
    timeout_seconds = models.PositiveIntegerField(default=60)
    max_retries = models.PositiveSmallIntegerField(default=2)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
