from django.contrib import admin

from portal.admin_scoping import FactsAdmin
from usage.models import UsageEvent


@admin.register(UsageEvent)
class UsageEventAdmin(FactsAdmin):
    """Events are facts reported by the gateway."""

    list_display = ["request_id", "timestamp", "organization", "department", "model", "prompt_tokens",
                    "completion_tokens", "cost", "currency", "status_code", "latency_ms"]
    list_filter = ["organization", "status_code", "currency"]
    search_fields = ["request_id", "trace_id", "conversation_id"]
    date_hierarchy = "timestamp"
    list_select_related = ["organization", "department", "model"]
    show_full_result_count = False  # COUNT(*) over millions of events on every page is wasted work
