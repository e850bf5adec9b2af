from django.urls import include, path

from usage.api import aione, r9s, venice, views

urlpatterns = [
    path("usage/events", views.IngestEventsView.as_view(), name="usage-ingest"),
    path("obs/usage", aione.ObsUsageView.as_view(), name="aione-usage"),
    path("obs/dashboard", aione.ObsDashboardView.as_view(), name="aione-dashboard"),
    path("modelRouter/open/billing/cost/", include("usage.api.modelrouter_urls")),
    path("billing/usage", venice.BillingUsageView.as_view(), name="venice-billing-usage"),
    path("billing/usage-analytics", venice.UsageAnalyticsView.as_view(), name="venice-usage-analytics"),
    path("billing/usage-history", venice.BillingUsageHistoryView.as_view(), name="venice-usage-history"),
    path("billing/balance", venice.BillingBalanceView.as_view(), name="venice-balance"),
    path("portal/management/usage", r9s.ManagementUsageView.as_view(), name="r9s-usage"),
    path("portal/management/balance", r9s.ManagementBalanceView.as_view(), name="r9s-balance"),
]
