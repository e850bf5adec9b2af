from rest_framework.response import Response

from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.views import RamAPIView
from usage.services import IngestValidationError, ingest_events


def _location(error) -> list[str | int]:
    location: list[str | int] = ["body", "events"]
    if error.index is not None:
        location.append(error.index)
    if error.field:
        location.append(error.field)
    return location


class IngestEventsView(RamAPIView):
    """`POST /api/v1/usage/events` from the gateway (service token): all or nothing per batch."""

    ram_actions = {"POST": "usage:IngestEvents"}

    def post(self, request):
        body = request.data
        if not isinstance(body, dict) or set(body) != {"events"}:
            raise InvalidRequest([FieldProblem(["body"], 'expected exactly {"events": [...]}')])
        try:
            result = ingest_events(body["events"])
        except IngestValidationError as error:
            raise InvalidRequest([FieldProblem(_location(e), e.message) for e in error.errors]) from error
        return Response({"accepted": result.accepted, "duplicates": result.duplicates})
