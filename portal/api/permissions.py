"""The one place where API requests are authorized.

Every API view declares the RAM action of each HTTP method (`ram_actions`). `RamPermission`
identifies the principal (a member, possibly through a scoped management key, or the platform's
service token), builds the request context and evaluates the member's policies. Views whose
resource depends on the object (a key, a department named in the body) call
`check_ram(...)` from here once they know it; list views narrow their rows with `allowed(...)`.
"""

import ipaddress
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework.permissions import BasePermission

from keys.models import ManagementKey
from portal.api.authentication import PlatformUser
from portal.api.errors import NoOrganization, RamDenied
from portal.models import Member
from portal.ram import evaluator
from portal.ram.actions import Action, get_action
from portal.ram.services import authorize, effective_policies
from portal.selectors import member_of


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


def view_action(request, view) -> Action:
    return get_action(view.ram_actions[request.method])


def principal_member(request) -> Member | None:
    return member_of(request.user) if not isinstance(request.user, PlatformUser) else None


def key_scopes(request) -> list[str]:
    return list(request.auth.scopes) if isinstance(request.auth, ManagementKey) else []


def _policies(request) -> list[evaluator.CompiledPolicy]:
    # Gathered once per request: a list view evaluates many rows against the same policies.
    cached = getattr(request, "_ram_policies", None)
    if cached is None:
        cached = effective_policies(principal_member(request))
        request._ram_policies = cached
    return cached


def decide(request, action: Action, resource_id: int | str = "*", department_id: int | None = None):
    member = principal_member(request)
    resource = action.resource(member.organization_id, resource_id)
    decision = authorize(member=member, action=action, resource=resource,
                         context=request_context(request, department_id), scopes=key_scopes(request),
                         policies=_policies(request))
    return decision, resource


def check_ram(request, action: Action, resource_id: int | str = "*", department_id: int | None = None) -> None:
    decision, resource = decide(request, action, resource_id, department_id)
    if not decision.allowed:
        raise RamDenied(action.name, resource, decision.effect)


def allowed(request, action: Action, rows, resource_id=lambda row: row.pk, department_id=lambda row: None) -> list:
    """The rows the principal may see under `action` (list endpoints narrow, they don't refuse)."""
    return [row for row in rows
            if decide(request, action, resource_id(row), department_id(row))[0].allowed]


class RamPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        if request.method not in view.ram_actions:
            return True  # DRF answers 405 for a method the view does not have
        action = view_action(request, view)
        if action.platform_only:
            if not isinstance(request.user, PlatformUser):
                raise RamDenied(action.name, "platform", "ImplicitDeny")
            return True
        member = principal_member(request)
        if member is None or member.organization.status != "active":
            # Service tokens and platform superusers are not members of any organization.
            raise NoOrganization(action.name)
        if action.member_baseline:
            return True
        if getattr(view, "ram_deferred", False):
            return True  # the view checks once it knows the object or the department
        check_ram(request, action)
        return True
