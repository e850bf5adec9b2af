"""The base of every API view: authentication, RAM authorization and the dialect's errors."""

from rest_framework.permissions import IsAuthenticated
from rest_framework.views import APIView

from portal.api.errors import AIoneDialect
from portal.api.permissions import RamPermission, client_ip, principal_member
from portal.services import Actor


class RamAPIView(APIView):
    # method -> RAM action name; a test fails any API view that leaves this empty.
    ram_actions: dict[str, str] = {}
    # True when the resource depends on the object or the body: the view calls check_ram itself.
    ram_deferred = False
    permission_classes = [IsAuthenticated, RamPermission]
    dialect = AIoneDialect


def request_actor(request) -> Actor:
    """The member behind a request, as services record them in the audit trail."""
    return Actor.for_member(principal_member(request), source_ip=client_ip(request))


def parse_input(serializer_class, data) -> dict:
    """Validate query or body input; a failure becomes the dialect's 422 naming each field."""
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
