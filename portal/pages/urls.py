"""The portal's pages (API.md §11). Each page module adds its own routes below."""

from django.contrib.auth import views as auth_views
from django.urls import path

from portal.pages import access, audit, billing, dashboard, door, keys, usage

app_name = "portal"

urlpatterns = [
    path("switch-organization/", door.switch_organization, name="switch-organization"),
    path("time-zone/", door.set_zone, name="set-zone"),
    *audit.urlpatterns,
    *access.urlpatterns,
    *dashboard.urlpatterns,
    *usage.urlpatterns,
    *keys.urlpatterns,
    *billing.urlpatterns,
]

# Django's own auth views, at the paths API.md §11 names; outside the "portal:" namespace because
# Django's password-reset views reverse these names bare.
auth_urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password-reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("password-reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("password-reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("i18n/setlang/", door.set_language, name="set_language"),
]
