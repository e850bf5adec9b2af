from django.contrib import admin
from django.urls import include, path, re_path
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer

from portal.api.errors import AIoneDialect, ApiError
from portal.gateway.wsgi_bridge import gateway_view
from portal.pages import urls as portal_pages
from usage.api import modelrouter, r9s, venice, weave

api_v1 = [
    path("", include("portal.api.urls")),
    path("", include("keys.api.urls")),
    path("", include("usage.api.urls")),
    path("", include("billing.api.urls")),
]

urlpatterns = [
    *portal_pages.auth_urlpatterns,
    path("", include(portal_pages)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    # Weave's path has no version prefix (API.md §5): clients call {base}/calls/stats.
    path("calls/stats", weave.CallsStatsView.as_view(), name="weave-calls-stats"),
    # The schema and its docs page: public, like the vendors' own docs (no tenant data in them).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api-auth/", include("rest_framework.urls")),
    # The gateway under runserver (WSGI); under ASGI (serve-prod) portal.asgi routes /v1/ before Django.
    re_path(r"^v1/", gateway_view, name="gateway"),
]


# Unknown paths and malformed ids under the API answer in JSON, in the dialect of the API they
# fall under (most specific prefix first), never Django's HTML page.
API_DIALECTS_BY_PATH = (
    ("/api/v1/modelRouter/", modelrouter.ModelRouterDialect),
    ("/api/v1/billing/usage", venice.VeniceDialect),
    ("/api/v1/billing/balance", venice.VeniceDialect),
    ("/api/v1/portal/management/", r9s.R9sDialect),
    ("/calls/", weave.WeaveDialect),
    ("/api/", AIoneDialect),
)


def not_found(request, exception=None):
    for prefix, dialect in API_DIALECTS_BY_PATH:
        if request.path.startswith(prefix):
            response = dialect.render(ApiError(404, "NotFound", "Not found."), request)
            response.accepted_renderer, response.accepted_media_type = JSONRenderer(), "application/json"
            response.renderer_context = {}
            return response.render()
    return page_not_found(request, exception)


handler404 = not_found
