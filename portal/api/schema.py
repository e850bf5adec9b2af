"""OpenAPI: every operation's description names its RAM action, and its error responses are
documented in its dialect's shape."""

import copy

from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, append_meta
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers

from portal.ram.actions import ACTIONS


class RamAutoSchema(AutoSchema):
    def get_operation(self, *args, **kwargs):
        # Appended here rather than in get_description, which extend_schema(description=) replaces.
        operation = super().get_operation(*args, **kwargs)
        action_name = getattr(self.view, "ram_actions", {}).get(self.method.upper())
        if operation is not None and action_name:
            action = ACTIONS[action_name]
            ram = (f"RAM action `{action.name}` ({action.access_level}), checked against "
                   f"`{action.resource('<org_id>', '<id>' if action.resource_type != 'department' else '*')}`.")
            operation["description"] = f"{operation.get('description', '')}\n\n{ram}".strip()
        if operation is not None and getattr(self.view, "body_nulls_mean_not_given", False):
            for content in operation.get("requestBody", {}).get("content", {}).values():
                self._optional_fields_take_null(content.get("schema", {}))
        if operation is not None:
            _document_negotiation_errors(operation)
        return operation

    def _optional_fields_take_null(self, schema: dict, seen: set | None = None) -> None:
        """Document what portal.api.views.parse_body does: an optional property of the body, at any
        depth, may be null (meaning "not given"). Walks the body's components; list items and
        required properties are left as they are, as parse_body leaves them."""
        seen = set() if seen is None else seen
        reference = schema.get("$ref")
        if reference:
            name = reference.rsplit("/", 1)[-1]
            if name in seen:
                return
            seen.add(name)
            try:
                component = self.registry[(name, ResolvedComponent.SCHEMA)]
            except KeyError:  # not a serializer's (enums become components only after every operation)
                return
            self._optional_fields_take_null(component.schema, seen)
            return
        for nested in (*schema.get("allOf", ()), *schema.get("oneOf", ()), *schema.get("anyOf", ())):
            self._optional_fields_take_null(nested, seen)
        if "items" in schema:
            self._optional_fields_take_null(schema["items"], seen)
        required = set(schema.get("required", ()))
        properties = schema.get("properties", {})
        for name, property_schema in properties.items():
            self._optional_fields_take_null(property_schema, seen)
            if name not in required and not property_schema.get("readOnly"):
                properties[name] = append_meta(property_schema, {"nullable": True})

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and _is_plain_text(field, schema):
            schema["pattern"] = _TEXT_PATTERN if field.allow_blank or not field.trim_whitespace else _NON_BLANK_PATTERN
        return schema

    def get_tags(self) -> list[str]:
        dialect = getattr(self.view, "dialect", None)
        return [getattr(dialect, "tag", None) or super().get_tags()[0]]

    def get_operation_id(self) -> str:
        return f"{self.view.__class__.__name__}_{self.method.lower()}"


# What every DRF CharField refuses whatever else it checks: NUL characters (its
# ProhibitNullCharactersValidator) and, unless blank is allowed, a value that is empty once
# trimmed (str.strip(): Python's whitespace, spelled out because a schema's \s is not Python's).
_PY_SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
# Not empty either: where blank is allowed drf-spectacular offers "" as a oneOf alternative of its own
# (`maxLength: 0`), and a pattern that also matched "" would make "" match both, which oneOf refuses.
_TEXT_PATTERN = "^[^\\x00]+$"
_NON_BLANK_PATTERN = f"^[^\\x00]*[^\\x00{_PY_SPACE}][^\\x00]*$"


def _is_plain_text(field, schema: dict) -> bool:
    """A CharField whose schema says nothing more precise (no format, enum or pattern of its own,
    nor a regex validator, whose pattern drf-spectacular writes only after this field is mapped)."""
    return (isinstance(field, serializers.CharField) and schema.get("type") == "string"
            and not {"format", "enum", "pattern"} & schema.keys()
            and not any(isinstance(validator, RegexValidator) for validator in field.validators))


def _document_negotiation_errors(operation: dict) -> None:
    """The errors DRF itself answers before any handler runs, in the operation's own dialect shape
    (copied from its documented 401 and validation answers, which the same dialect renders):
    406 for an Accept header naming nothing the operation writes, and for a body, 400 when it is not
    JSON and 415 when its content type is not JSON."""
    responses = operation.get("responses", {})
    plain = responses.get("401")
    if plain is None:
        return
    responses.setdefault("406", {**copy.deepcopy(plain), "description": "Not Acceptable: the Accept header names "
                                 "no media type this operation answers in."})
    if "requestBody" in operation:
        invalid = responses.get("422") or responses.get("400") or plain
        responses.setdefault("400", {**copy.deepcopy(invalid), "description": "The body is not valid JSON."})
        responses.setdefault("415", {**copy.deepcopy(plain), "description": "Unsupported Media Type: bodies are "
                                     "application/json."})
    operation["responses"] = dict(sorted(responses.items()))


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.BearerKeyAuthentication"
    name = "bearerKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A management key (sk_mg_…) or, for the gateway endpoints, a service token (sk_svc_…)."}


class BasicKeyScheme(OpenApiAuthenticationExtension):
    target_class = "portal.api.authentication.BasicKeyAuthentication"
    name = "basicKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic",
                "description": "Any user name, with a management key as the password (Weave clients)."}


# --- error shapes, documented once per dialect ----------------------------------------------

@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class LocationPart(serializers.Field):
    """One step of a `loc` path: a field name, or a list index (["body", "events", 3, "model"])."""


class ValidationErrorItem(serializers.Serializer):
    loc = serializers.ListField(child=LocationPart())
    msg = serializers.CharField()
    type = serializers.CharField()


class HTTPValidationError(serializers.Serializer):
    detail = ValidationErrorItem(many=True)


class ErrorDetail(serializers.Serializer):
    detail = serializers.CharField()


class RamDeniedError(serializers.Serializer):
    detail = serializers.CharField()
    action = serializers.CharField()
    resource = serializers.CharField()
    decision = serializers.ChoiceField(choices=["ImplicitDeny", "ExplicitDeny"])


AIONE_ERRORS = {401: ErrorDetail, 403: RamDeniedError, 404: ErrorDetail, 422: HTTPValidationError}


def aione(response, *, request=None, parameters=None, status: int = 200, description: str | None = None):
    """extend_schema for an AIone-dialect operation: its success shape plus the error shapes."""
    return extend_schema(request=request, parameters=parameters, description=description,
                         responses={status: response, **AIONE_ERRORS})
