"""Errors: what can go wrong (`ApiError`, whatever raised it) and how a dialect renders it.

Every view names its dialect; `exception_handler` (settings.REST_FRAMEWORK) turns any exception
into an `ApiError` and lets the view's dialect render it in its vendor's shape. AIone's shape is
the house default here; each other vendor's dialect sits next to its views (usage/api/*)."""

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response


class RamDenied(exceptions.PermissionDenied):
    """A RAM decision other than Allow; names the action and the resource that were denied."""

    def __init__(self, action: str, resource: str, decision: str = "ImplicitDeny") -> None:
        self.action, self.resource, self.decision = action, resource, decision
        super().__init__(f"Access denied ({decision}): {action} on {resource}.")


class NoOrganization(RamDenied):
    """The caller belongs to no (active) organization: a service token, a platform superuser."""

    def __init__(self, action: str) -> None:
        super().__init__(action, "organization", "ImplicitDeny")


@dataclass
class FieldProblem:
    location: list[str | int]  # e.g. ["body", "rpm_limit"] or ["query", "page_size"]
    message: str
    type: str = "value_error"


class InvalidRequest(exceptions.APIException):
    """Bad input, with each offending field named."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "invalid"

    def __init__(self, problems: list[FieldProblem], status_code: int | None = None) -> None:
        self.problems = problems
        if status_code:
            self.status_code = status_code
        super().__init__("; ".join(f"{'.'.join(map(str, p.location))}: {p.message}" for p in problems))


@dataclass
class ApiError:
    status: int
    code: str
    message: str
    problems: list[FieldProblem] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class AIoneDialect:
    """FastAPI-style: validation errors are 422 {"detail": [{"loc", "msg", "type"}]}; others
    {"detail": "..."}."""

    tag = "AIone"
    validation_status = 422

    @staticmethod
    def render(error: ApiError, request=None) -> Response:
        if error.problems:
            detail = [{"loc": p.location, "msg": p.message, "type": p.type} for p in error.problems]
            return Response({"detail": detail}, status=error.status)
        return Response({"detail": error.message, **error.extra}, status=error.status)


def request_id(request) -> str:
    """One id per request, echoed in the envelopes that carry one (r9s, Alibaba)."""
    if request is None:
        return uuid.uuid4().hex
    existing = getattr(request, "_portal_request_id", None)
    if existing is None:
        existing = request._portal_request_id = str(uuid.uuid4()).upper()
    return existing


def problems_from_drf(detail: Any, location: list[str | int]) -> list[FieldProblem]:
    if isinstance(detail, dict):
        problems: list[FieldProblem] = []
        for name, value in detail.items():
            inner = location if name == "non_field_errors" else [*location, name]
            problems.extend(problems_from_drf(value, inner))
        return problems
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [FieldProblem(location, str(item), getattr(item, "code", "value_error") or "value_error")
                    for item in detail]
        problems = []
        for index, item in enumerate(detail):
            problems.extend(problems_from_drf(item, [*location, index]))
        return problems
    return [FieldProblem(location, str(detail), getattr(detail, "code", "value_error") or "value_error")]


def to_api_error(exc: Exception, request, validation_status: int = 422) -> ApiError | None:
    if isinstance(exc, InvalidRequest) and exc.status_code == status.HTTP_404_NOT_FOUND:
        # Every 404 of a dialect has one body, whatever found nothing (the schema documents one).
        return ApiError(404, "NotFound", "Not found.")
    if isinstance(exc, InvalidRequest):
        # 422 by default; a dialect whose vendor answers bad input with 400 says so.
        code = validation_status if exc.status_code == status.HTTP_422_UNPROCESSABLE_ENTITY else exc.status_code
        return ApiError(code, "invalid", str(exc.detail), exc.problems)
    if isinstance(exc, exceptions.ValidationError):
        location = ["query"] if request is not None and request.method in ("GET", "DELETE") else ["body"]
        problems = problems_from_drf(exc.detail, location)
        return ApiError(validation_status, "invalid", "Invalid request.", problems)
    if isinstance(exc, exceptions.ParseError):
        return ApiError(400, "parse_error", str(exc.detail), [FieldProblem(["body"], str(exc.detail), "json_invalid")])
    if isinstance(exc, RamDenied):
        code = "NoOrganization" if isinstance(exc, NoOrganization) else "AccessDenied"
        return ApiError(403, code, str(exc.detail),
                        extra={"action": exc.action, "resource": exc.resource, "decision": exc.decision})
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        return ApiError(401, "Unauthorized", str(exc.detail))
    if isinstance(exc, Http404 | exceptions.NotFound):
        return ApiError(404, "NotFound", "Not found.")
    if isinstance(exc, exceptions.APIException):
        return ApiError(exc.status_code, getattr(exc, "default_code", "error"), str(exc.detail))
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    view = context.get("view")
    dialect = getattr(view, "dialect", AIoneDialect)
    error = to_api_error(exc, context.get("request"), dialect.validation_status)
    if error is None:
        return None  # a real bug: let it surface as a 500 and be fixed
    response = dialect.render(error, context.get("request"))
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response
