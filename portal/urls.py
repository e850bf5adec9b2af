from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

api_v1 = [
    path("", include("portal.api.urls")),
    path("", include("keys.api.urls")),
    path("", include("usage.api.urls")),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api-auth/", include("rest_framework.urls")),
]
