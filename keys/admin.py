from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from keys.models import InferenceKey, ManagementKey, ServiceToken
from portal.admin_scoping import OrganizationScopedAdmin

# Secrets are never stored, so no admin page can show one; the hashes are excluded as well.
SECRET_FIELDS = ["secret_hash", "previous_secret_hash"]


@admin.register(InferenceKey)
class InferenceKeyAdmin(OrganizationScopedAdmin):
    list_display = ["name", "key_prefix", "organization", "department", "status", "expires_at", "last_used_at"]
    list_filter = ["organization", "status", "is_sandbox"]
    search_fields = ["name", "key_prefix", "uuid"]
    list_select_related = ["organization", "department"]
    exclude = SECRET_FIELDS
    readonly_fields = ["uuid", "key_prefix", "created_at", "last_used_at", "rotate_grace_until", "deleted_at"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # keys are issued through the API or the portal, which show the secret once


@admin.register(ManagementKey)
class ManagementKeyAdmin(OrganizationScopedAdmin):
    organization_path = "member__organization"
    list_display = ["name", "key_prefix", "member", "status", "expires_at", "last_used_at"]
    list_filter = ["status"]
    search_fields = ["name", "key_prefix", "uuid", "member__user__username"]
    list_select_related = ["member__user"]
    exclude = SECRET_FIELDS
    readonly_fields = ["uuid", "key_prefix", "member", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    """Platform credentials: superusers only (the default Django permissions apply)."""

    list_display = ["name", "key_prefix", "status", "created_at", "last_used_at"]
    exclude = SECRET_FIELDS
    readonly_fields = ["uuid", "key_prefix", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
