from django.urls import path

from usage.api import views

urlpatterns = [path("usage/events", views.IngestEventsView.as_view(), name="usage-ingest")]
