from django.urls import path

from usage.api import modelrouter as views

urlpatterns = [
    path("tabs", views.TabsView.as_view(), name="modelrouter-tabs"),
    path("overview", views.OverviewView.as_view(), name="modelrouter-overview"),
    path("trend", views.TrendView.as_view(), name="modelrouter-trend"),
    path("models", views.ModelsView.as_view(), name="modelrouter-models"),
    path("model-detail", views.ModelDetailView.as_view(), name="modelrouter-model-detail"),
    path("breakdown", views.BreakdownView.as_view(), name="modelrouter-breakdown"),
]
