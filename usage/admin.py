"""Usage events in the admin: facts reported by the gateway, read-only. Times in the viewing
zone with the zone named; an event's costs with all 8 places (a cent would hide them)."""

from django.contrib import admin

from billing.admin import shown_as_money
from portal.admin_scoping import FactsAdmin
from usage.models import UsageEvent

EVENT_COSTS = ("cost", "input_cost", "cache_read_cost", "output_cost")


@admin.register(UsageEvent)
class UsageEventAdmin(FactsAdmin):
    """Events are facts reported by the gateway."""

    list_display = ["request_id", "timestamp", "organization", "department", "model", "prompt_tokens",
                    "completion_tokens", "cost", "currency", "status_code", "latency_ms"]
    display_formats = {name: shown_as_money(per_event=True) for name in EVENT_COSTS}
    list_filter = ["organization", "status_code", "currency"]
    search_fields = ["request_id", "trace_id", "conversation_id"]
    date_hierarchy = "timestamp"
    list_select_related = ["organization", "department", "model"]
    show_full_result_count = False  # COUNT(*) over millions of events on every page is wasted work
