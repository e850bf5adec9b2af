"""The one door: every API request is authorized here, before its handler runs.

Each API view declares the RAM action of each HTTP method (`ram_actions`) and how the resource
of a request is found (`ram_resource`, one of the declarations below). `RamPermission` asks the
declaration for the request's targets and decides each of them; an object view's object is
decided in `has_object_permission` when `get_object()` finds it, which the declaration does
before the handler runs; a list view's queryset is narrowed here, by the RAM decision turned
into a filter (NetBox's `restrict()`). No view decides anything itself, and a view that declares
no resource is refused (and fails the endpoint walk in the tests).

The tenant is resolved once, by authentication (`resolve_tenant`): `request.member` and
`request.organization`; nothing else recomputes them.
"""

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework.permissions import BasePermission

from keys.models import ManagementKey
from portal.api.authentication import PlatformUser
from portal.api.errors import NoOrganization, RamDenied
from portal.models import Department
from portal.ram import evaluator
from portal.ram.actions import Action, get_action
from portal.ram.services import authorize, effective_policies
from portal.selectors import member_of

logger = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The caller's address: the socket's, or X-Forwarded-For's when the socket is a trusted proxy."""
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = [ipaddress.ip_network(n, strict=False) for n in getattr(settings, "TRUSTED_PROXIES", [])]

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if not is_trusted(remote):
        return remote
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
    # The right-most address that is not one of our proxies is the one a client cannot forge.
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return remote


def request_context(request, department_id: int | None = None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "acs:SourceIp": client_ip(request),
        "acs:CurrentTime": timezone.now(),
        "acs:SecureTransport": request.is_secure(),
        # No second factor exists for keys; the portal session has none yet either.
        "acs:MFAPresent": False,
    }
    if department_id is not None:
        context["usage:DepartmentId"] = str(department_id)
    return context


# --- the tenant ---------------------------------------------------------------------------------

def resolve_tenant(request) -> None:
    """Set `request.member` and `request.organization` from the authenticated principal, once.

    A management key already carries its member (loaded with the key); a session user's member
    is one query; the platform's service token belongs to no organization."""
    user, credential = request.user, request.auth
    if isinstance(user, PlatformUser):
        member = None
    elif isinstance(credential, ManagementKey):
        member = credential.member
    else:
        session = getattr(request, "session", None)
        member = member_of(user, session.get(settings.SESSION_ORGANIZATION_KEY) if session is not None else None)
    request.member = member
    request.organization = member.organization if member is not None else None


# --- what a view declares -----------------------------------------------------------------------

@dataclass(frozen=True)
class RamTarget:
    """One resource a request acts on: its id in the action's resource type, and the department
    it belongs to (sets `usage:DepartmentId`), if any."""

    resource_id: int | str = "*"
    department_id: int | None = None

    @classmethod
    def department(cls, department: Department | None) -> "RamTarget":
        """An analytics query filtered to one department, or the whole organization's (API.md §1)."""
        return cls(department.pk, department.pk) if department is not None else cls()


class _Decided:
    """Returned by a declaration whose decision was already made (on the object, or the list)."""


DECIDED = _Decided()
Declaration = Callable[[Any, Any], Sequence[RamTarget] | _Decided]


def whole_collection(view, request) -> Sequence[RamTarget]:
    """The action applies to the organization's whole collection: `<type>/*`."""
    return (RamTarget(),)


def the_object(view, request) -> _Decided:
    """The object named in the URL: `view.get_object()` finds it in the organization (404 when
    not there) and DRF calls `has_object_permission` on it, before the handler runs."""
    view.get_object()
    return DECIDED


def narrowed_list(view, request) -> _Decided:
    """A list: `view.queryset` becomes the rows the principal may see under the action (403 when
    that can be none at all)."""
    view.queryset = restrict(request, view_action(request, view), view.get_queryset(),
                             department_field=view.ram_department_field)
    return DECIDED


# --- deciding -------------------------------------------------------------------------------------

def decided_method(request) -> str:
    """The method whose action decides: HEAD runs the GET handler (Django maps it), so it is
    decided exactly as GET."""
    return "GET" if request.method == "HEAD" else request.method


def view_action(request, view) -> Action:
    return get_action(view.ram_actions[decided_method(request)])


def key_scopes(request) -> list[str]:
    return list(request.auth.scopes) if isinstance(request.auth, ManagementKey) else []


def _policies(request) -> list[evaluator.CompiledPolicy]:
    # Gathered once per request: a list may be decided for many departments against them.
    cached = getattr(request, "_ram_policies", None)
    if cached is None:
        cached = effective_policies(request.member)
        request._ram_policies = cached
    return cached


def _decide(request, action: Action, target: RamTarget) -> tuple[evaluator.Decision, str]:
    resource = action.resource(request.organization.pk, target.resource_id)
    decision = authorize(member=request.member, action=action, resource=resource,
                         context=request_context(request, target.department_id), scopes=key_scopes(request),
                         policies=_policies(request))
    return decision, resource


def _require(request, action: Action, target: RamTarget) -> None:
    decision, resource = _decide(request, action, target)
    if not decision.allowed:
        raise RamDenied(action.name, resource, decision.effect)


def permitted(request, action_name: str, target: RamTarget | None = None) -> bool:
    """Whether the request's member may take `action_name` on `target`: the door's own decision,
    for a page that offers a control only to those who may use it (the control's own request is
    still decided when it arrives)."""
    if request.member is None or request.organization.status != "active":
        return False
    action = get_action(action_name)
    return action.member_baseline or _decide(request, action, target or RamTarget())[0].allowed


def restrict(request, action: Action, queryset: QuerySet, *, department_field: str = "department_id") -> QuerySet:
    """`queryset` narrowed to the rows `action` allows, as a filter (NetBox's `restrict()`).

    The decision is taken once per department, on the collection (`<type>/*`). That is exact
    unless a policy names single rows (`apikey/17`): then, and only then, each row is decided.
    Raises the denial when nothing at all can be allowed."""
    organization = request.organization
    prefix = action.resource(organization.pk, "")
    departments = Department.objects.filter(organization=organization).values_list("pk", flat=True)
    allowed_departments = [pk for pk in departments
                           if _decide(request, action, RamTarget("*", pk))[0].allowed]
    if evaluator.decision_varies_within(_policies(request), action.name, prefix):
        rows = queryset.values_list("pk", department_field)
        allowed_rows = [pk for pk, department_id in rows
                        if _decide(request, action, RamTarget(pk, department_id))[0].allowed]
        if allowed_rows or allowed_departments:
            return queryset.filter(pk__in=allowed_rows)
    elif allowed_departments:
        return queryset.filter(**{f"{department_field}__in": allowed_departments})
    # Nothing in any department: only a caller allowed on the whole collection sees an empty list.
    _require(request, action, RamTarget())
    return queryset.none()


class RamPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        method = decided_method(request)
        if method not in view.ram_actions:
            if method == "OPTIONS" or not hasattr(view, method.lower()):
                return True  # DRF's metadata answer, or its 405 for a method the view does not have
            # A handler with no declared action (the endpoint walk forbids it) runs for nobody.
            raise RamDenied(f"undeclared:{method}", "*", "ImplicitDeny")
        action = view_action(request, view)
        if action.platform_only:
            if not isinstance(request.user, PlatformUser):
                raise RamDenied(action.name, "platform", "ImplicitDeny")
            return True
        if request.member is None or request.organization.status != "active":
            # Service tokens and platform superusers are not members of any organization.
            raise NoOrganization(action.name)
        if action.member_baseline:
            return True
        declaration = getattr(view, "ram_resource", None)
        if declaration is None:
            # Fail closed: a view that does not say what it acts on is never allowed anything.
            logger.error("%s declares no ram_resource; refusing %s", type(view).__name__, action.name)
            raise RamDenied(action.name, action.resource(request.organization.pk), "ImplicitDeny")
        targets = declaration(request)
        if targets is DECIDED:
            return True
        if not targets:
            raise RamDenied(action.name, action.resource(request.organization.pk), "ImplicitDeny")
        for target in targets:
            _require(request, action, target)
        return True

    def has_object_permission(self, request, view, obj) -> bool:
        _require(request, view_action(request, view), view.ram_target_of(obj))
        return True


__all__ = ["DECIDED", "RamPermission", "RamTarget", "client_ip", "narrowed_list", "permitted", "request_context",
           "resolve_tenant", "restrict", "the_object", "view_action", "whole_collection"]

