from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from usage.api import weave

api_v1 = [
    path("", include("portal.api.urls")),
    path("", include("keys.api.urls")),
    path("", include("usage.api.urls")),
    path("", include("billing.api.urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    # Weave's path has no version prefix (API.md §5): clients call {base}/calls/stats.
    path("calls/stats", weave.CallsStatsView.as_view(), name="weave-calls-stats"),
    # The schema and its docs page: public, like the vendors' own docs (no tenant data in them).
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api-auth/", include("rest_framework.urls")),
]
