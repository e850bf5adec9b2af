from drf_spectacular.utils import inline_serializer
from rest_framework import serializers
from rest_framework.response import Response

from billing.services import record_usage
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.permissions import whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView
from usage.services import IngestValidationError
from usage.wire import shaped_events


def _location(error) -> list[str | int]:
    location: list[str | int] = ["body", "events"]
    if error.index is not None:
        location.append(error.index)
    if error.field:
        location.append(error.field)
    return location


UsageEventIn = inline_serializer("UsageEventIn", {
    "request_id": serializers.CharField(max_length=128), "timestamp": serializers.CharField(
        help_text="ISO 8601 with an offset, or Unix seconds"), "key_id": serializers.UUIDField(),
    "model": serializers.CharField(), **{name: serializers.IntegerField(min_value=0, required=False) for name in (
        "prompt_tokens", "completion_tokens", "image_count", "video_seconds", "input_chars", "output_chars")},
    "cached_tokens": serializers.IntegerField(min_value=0, required=False, help_text=(
        "Prompt tokens read from a prompt cache: a part of prompt_tokens, billed at the cached input price")),
    "cache_creation_tokens": serializers.IntegerField(min_value=0, required=False, help_text=(
        "Prompt tokens written to a prompt cache: a part of prompt_tokens (cached_tokens + cache_creation_tokens "
        "<= prompt_tokens), billed at the model's cache-write price, or its input price where it has none")),
    "latency_ms": serializers.IntegerField(min_value=0), "status_code": serializers.IntegerField(),
    "error_type": serializers.CharField(allow_null=True, required=False),
    **{name: serializers.CharField(allow_null=True, required=False, max_length=128) for name in (
        "op_name", "trace_id", "parent_id", "thread_id", "turn_id", "conversation_id")}})
IngestRequest = inline_serializer("UsageIngestRequest", {"events": serializers.ListField(
    child=UsageEventIn, min_length=1, max_length=1000)})
IngestResponse = inline_serializer("UsageIngestResponse", {"accepted": serializers.IntegerField(),
                                                           "duplicates": serializers.IntegerField()})


class IngestEventsView(RamAPIView):
    """`POST /api/v1/usage/events` from the gateway (service token): all or nothing per batch."""

    ram_actions = {"POST": "usage:IngestEvents"}
    ram_resource = whole_collection
    # Read by its own two checkers (usage.wire, usage.services), where a count's null is refused.
    body_nulls_mean_not_given = False

    @aione(IngestResponse, request=IngestRequest)
    def post(self, request):
        # The gateway's well-formed batches are decoded and shape-checked in C; anything else
        # (including every invalid batch) takes DRF's parser and the per-field checks, which word
        # the errors.
        is_json = request.content_type.split(";")[0].strip().lower() == "application/json"
        events = shaped_events(request.body) if is_json else None
        if events is None:
            body = request.data
            if not isinstance(body, dict) or set(body) != {"events"}:
                raise InvalidRequest([FieldProblem(["body"], 'expected exactly {"events": [...]}')])
            events = body["events"]
        try:
            result = record_usage(events)
        except IngestValidationError as error:
            raise InvalidRequest([FieldProblem(_location(e), e.message) for e in error.errors]) from error
        return Response({"accepted": result.accepted, "duplicates": result.duplicates})
