"""Usage events as the gateway reports them, rated and frozen at ingest."""

from django.db import models

from billing.models import Model, Price
from billing.money import amount_field, currency_field
from keys.models import InferenceKey
from portal.models import Department, Member, Organization

TRACE_FIELD_LENGTH = 128


def _trace_field() -> models.CharField:
    # NULL means "the gateway sent none", which differs from an empty string: an event without
    # a conversation_id is a conversation of its own.
    return models.CharField(max_length=TRACE_FIELD_LENGTH, null=True, blank=True)  # noqa: DJ001


class UsageEvent(models.Model):
    """One gateway request. Organization, department, member, price and cost are resolved when
    the event is ingested and never change afterwards, except through an explicit re-rate."""

    id = models.BigAutoField(primary_key=True)
    request_id = models.CharField(max_length=128, unique=True)
    timestamp = models.DateTimeField()
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+", db_index=False)
    department = models.ForeignKey(Department, on_delete=models.PROTECT, related_name="+", db_index=False)
    key = models.ForeignKey(InferenceKey, on_delete=models.PROTECT, related_name="+", db_index=False)
    member = models.ForeignKey(Member, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False)
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="+", db_index=False)
    price = models.ForeignKey(Price, on_delete=models.PROTECT, related_name="+", db_index=False)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    image_count = models.PositiveIntegerField(default=0)
    video_seconds = models.PositiveIntegerField(default=0)
    input_chars = models.PositiveBigIntegerField(default=0)
    output_chars = models.PositiveBigIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField()
    error_type = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    op_name = _trace_field()
    trace_id = _trace_field()
    parent_id = _trace_field()
    thread_id = _trace_field()
    turn_id = _trace_field()
    conversation_id = _trace_field()
    cost = amount_field()
    currency = currency_field()
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["timestamp", "id"]
        indexes = [
            models.Index(fields=["organization", "timestamp"], name="usageevent_org_time"),
            models.Index(fields=["key", "timestamp"], name="usageevent_key_time"),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
