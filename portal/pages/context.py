"""What every portal template knows: the organization, the switcher, the navigation a member may use."""

from django.conf import settings
from django.utils.translation import gettext_lazy as _

from portal.api.permissions import permitted
from portal.selectors import memberships_of

# (path, label, the action its page is decided by): API.md §11.
NAVIGATION = (
    ("/", _("Dashboard"), "usage:GetDashboard"),
    ("/usage/", _("Usage"), "usage:QueryUsage"),
    ("/keys/", _("API keys"), "keys:ListKeys"),
    ("/billing/", _("Billing"), "billing:GetBillingAccount"),
    ("/access/", _("Access"), "ram:ListPolicies"),
    ("/audit/", _("Audit log"), "ram:ListAuditLog"),
)


def portal(request) -> dict:
    member = getattr(request, "portal_member", None)
    context = {"portal_languages": settings.LANGUAGES, "portal_member": member}
    if member is None:
        return context
    context["portal_organization"] = member.organization
    context["portal_zone_is_viewer"] = request.session.get("portal_zone") == "viewer"
    # Decided only on pages (RamPage resolved the tenant); elsewhere the navigation is not shown.
    if getattr(request, "organization", None) is not None:
        context["portal_navigation"] = [
            {"path": path, "label": label, "current": _is_current(request.path, path)}
            for path, label, action in NAVIGATION
            if permitted(request, action)
        ]
        memberships = memberships_of(request.user)
        if len(memberships) > 1:
            context["portal_memberships"] = memberships
    return context


def _is_current(current: str, path: str) -> bool:
    return current == path if path == "/" else current.startswith(path)
