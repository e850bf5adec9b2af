"""The base of every API view: authentication, the tenant, RAM authorization and the dialect's errors.

A view says what it does (`ram_actions`, one registered action per method) and what it acts on
(`ram_resource`, a declaration from portal.api.permissions); `RamPermission` decides before the
handler runs. Views never decide themselves."""

from typing import Any

from django.http import QueryDict
from django.shortcuts import get_object_or_404
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.views import APIView

from portal.api.errors import AIoneDialect, FieldProblem, InvalidRequest, problems_from_drf
from portal.api.permissions import RamPermission, client_ip, resolve_tenant, the_object
from portal.services import Actor


class RamAPIView(APIView):
    # method -> RAM action name; the endpoint walk fails any API view that leaves this empty.
    ram_actions: dict[str, str] = {}
    # How the request's resource is found: whole_collection, the_object, narrowed_list or a method
    # returning RamTargets. None (undeclared) is refused, and the endpoint walk fails on it.
    ram_resource = None
    # For narrowed_list: the column that holds a row's department.
    ram_department_field = "department_id"
    permission_classes = [IsAuthenticated, RamPermission]
    dialect = AIoneDialect
    # The body is read by parse_body, where a null for an optional field means "not given"; the
    # schema then documents those fields as nullable (portal.api.schema). A view that reads its
    # body some other way (ingestion's compiled fast path) says False.
    body_nulls_mean_not_given = True

    def perform_authentication(self, request) -> None:
        super().perform_authentication(request)
        resolve_tenant(request)


class RamObjectView(RamAPIView):
    """A view of one object named in the URL, found only within the caller's organization (another
    organization's object is simply not found) and decided on before the handler runs.

    Subclasses define `get_queryset()` (the organization's objects) and `ram_target_of(obj)`
    (the RamTarget the object is checked as)."""

    ram_resource = the_object
    lookup_url_kwarg: str
    lookup_field = "uuid"

    def get_object(self):
        if not hasattr(self, "_object"):
            found = get_object_or_404(self.get_queryset(), **{self.lookup_field: self.kwargs[self.lookup_url_kwarg]})
            self.check_object_permissions(self.request, found)
            self._object = found
        return self._object


def request_actor(request) -> Actor:
    """Who is behind a request, as services record them in the audit trail: a member, or the
    platform's service token (operators' tooling)."""
    if request.member is None:
        return Actor(label=request.user.get_username(), source_ip=client_ip(request))
    return Actor.for_member(request.member, source_ip=client_ip(request))


def parse_query(serializer_class, request) -> dict:
    """Validate the query string; a failure is the dialect's 4xx naming each `query` field.

    `?team_id=` is refused, not read as absent (DRF's fields would drop an empty optional value
    silently): only a parameter that documents an empty value (allow_blank) may be empty."""
    fields = serializer_class().fields
    empty = [FieldProblem(["query", name], "may not be empty: leave the parameter out instead", "value_error.empty")
             for name, values in request.query_params.lists()
             if name in fields and "" in values and not getattr(fields[name], "allow_blank", False)]
    if empty:
        raise InvalidRequest(empty)
    return _parse(serializer_class, request.query_params, "query")


def parse_body(serializer_class, request) -> dict:
    """Validate the body; a failure is the dialect's 4xx naming each `body` field.

    An explicit JSON null for an optional field that takes no null means the field was not given,
    at any depth, in every dialect (API.md §1): clients built on typed models (Weave's Pydantic
    requests dumped with their unset fields) send one for every field they leave alone. Such nulls
    are dropped before validation, so the field's default applies. A field declared
    `allow_null` keeps its null (it means something there), and so does a required field (whose
    null is still an error naming it)."""
    return _parse(serializer_class, without_unset_nulls(serializer_class(), request.data), "body")


def without_unset_nulls(serializer: serializers.Serializer, data: Any) -> Any:
    """`data` without the nulls `serializer` reads as "not given", into nested serializers and
    lists of them. Anything else (unknown keys, values of the wrong type, free-form JSON fields,
    list items) is left for validation to judge."""
    if not isinstance(data, dict) or isinstance(data, QueryDict):  # form encodings carry no null
        return data
    fields = serializer.fields
    kept = {}
    for name, value in data.items():
        field = fields.get(name)
        if field is None or field.read_only:
            kept[name] = value
        elif value is None:
            if field.required or field.allow_null:
                kept[name] = value
        else:
            kept[name] = _nested_without_unset_nulls(field, value)
    return kept


def _nested_without_unset_nulls(field: serializers.Field, value: Any) -> Any:
    if isinstance(field, serializers.ListSerializer | serializers.ListField):
        child = field.child
        if isinstance(child, serializers.Serializer) and isinstance(value, list):
            return [without_unset_nulls(child, item) for item in value]
        return value
    if isinstance(field, serializers.Serializer):
        return without_unset_nulls(field, value)
    return value


def _parse(serializer_class, data, where: str) -> dict:
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise InvalidRequest(problems_from_drf(serializer.errors, [where]))
    return serializer.validated_data
