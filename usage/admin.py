from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from portal.admin_scoping import OrganizationScopedAdmin
from usage.models import UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(OrganizationScopedAdmin):
    """Events are facts reported by the gateway: readable, never edited by hand."""

    read_only_for_org_admins = True
    list_display = ["request_id", "timestamp", "organization", "department", "model", "prompt_tokens",
                    "completion_tokens", "cost", "currency", "status_code", "latency_ms"]
    list_filter = ["organization", "status_code", "currency"]
    search_fields = ["request_id", "trace_id", "conversation_id"]
    date_hierarchy = "timestamp"
    list_select_related = ["organization", "department", "model"]
    show_full_result_count = False  # COUNT(*) over millions of events on every page is wasted work

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
