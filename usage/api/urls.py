from django.urls import path

from usage.api import aione, views

urlpatterns = [
    path("usage/events", views.IngestEventsView.as_view(), name="usage-ingest"),
    path("obs/usage", aione.ObsUsageView.as_view(), name="aione-usage"),
    path("obs/dashboard", aione.ObsDashboardView.as_view(), name="aione-dashboard"),
]
