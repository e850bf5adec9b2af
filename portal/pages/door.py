"""The portal pages' door: the API's own RAM decision, answered as pages.

A page view declares `ram_actions` (method -> action) and `ram_resource` (a declaration from
portal.api.permissions) like an API view, and `RamPermission` decides it before the handler runs:
there is no second authorization path. What differs is only how the answer looks: an anonymous
visitor is sent to the login page, a denial is a 403 page naming the action, a member of no
organization is told so."""

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views import View
from django.views.decorators.http import require_POST
from django.views.i18n import set_language as django_set_language

from portal.api.errors import NoOrganization, RamDenied
from portal.api.permissions import RamPermission, RamTarget, client_ip, permitted
from portal.selectors import memberships_of
from portal.services import Actor


class RamPage(View):
    """Base of every portal page. Subclasses set `ram_actions` and `ram_resource`; object pages
    also set `lookup_url_kwarg` and define `get_queryset()` and `ram_target_of(obj)`."""

    ram_actions: dict[str, str] = {}
    ram_resource = None
    ram_department_field = "department_id"
    lookup_url_kwarg = "uuid"
    lookup_field = "uuid"
    template_name: str = ""
    _permission = RamPermission()

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path(), settings.LOGIN_URL)
        # The tenant as the API resolves it; a session carries no key and no key scopes.
        request.auth = None
        request.member = request.portal_member
        request.organization = request.member.organization if request.member is not None else None
        try:
            self._permission.has_permission(request, self)
        except NoOrganization:
            return render(request, "portal/no_organization.html", status=403)
        except RamDenied as denied:
            return denied_page(request, denied)
        return super().dispatch(request, *args, **kwargs)

    # --- what the declarations of portal.api.permissions call --------------------------------

    def get_object(self):
        if not hasattr(self, "_object"):
            found = get_object_or_404(self.get_queryset(), **{self.lookup_field: self.kwargs[self.lookup_url_kwarg]})
            self._permission.has_object_permission(self.request, self, found)
            self._object = found
        return self._object

    def get_queryset(self):
        raise NotImplementedError(f"{type(self).__name__} lists or finds objects but defines no get_queryset()")

    # --- for templates --------------------------------------------------------------------------

    def can(self, action_name: str, target: RamTarget | None = None) -> bool:
        """Whether to offer a control: the same decision its own request will get."""
        return permitted(self.request, action_name, target)

    def actor(self) -> Actor:
        """Who acts, for the audit trail: the member, from the address the request came from."""
        return Actor.for_member(self.request.member, source_ip=client_ip(self.request))


def denied_page(request, denied: RamDenied):
    """403 as a page that names the denied action and resource (API.md §11)."""
    return render(request, "portal/denied.html", {"denied": denied}, status=403)


def _safe_next(request, fallback: str = "/") -> str:
    target = request.POST.get("next") or request.META.get("HTTP_REFERER") or fallback
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return fallback


@require_POST
def switch_organization(request):
    """The organization switcher: a member of several organizations chooses which one to act as."""
    if not request.user.is_authenticated:
        return redirect_to_login("/", settings.LOGIN_URL)
    wanted = request.POST.get("organization", "")
    for member in memberships_of(request.user):
        if str(member.organization.uuid) == wanted:
            request.session[settings.SESSION_ORGANIZATION_KEY] = member.organization_id
            return HttpResponseRedirect("/")
    return render(request, "portal/denied.html", {"message": _("You are not a member of that organization.")},
                  status=403)


@require_POST
def set_language(request):
    """Django's `set_language` (the cookie), and for a logged-in member their saved setting too,
    so the choice follows them to another browser."""
    response = django_set_language(request)
    member = getattr(request, "portal_member", None)
    language = request.POST.get("language", "")
    if member is not None and language in dict(settings.LANGUAGES):
        member.language = language
        member.save(update_fields=["language"])
    return response


@require_POST
def set_zone(request):
    """Show times in the organization's zone (the default) or the viewer's own."""
    request.session["portal_zone"] = "viewer" if request.POST.get("zone") == "viewer" else "organization"
    return HttpResponseRedirect(_safe_next(request))


__all__ = ["RamPage", "denied_page", "set_language", "set_zone", "switch_organization"]
