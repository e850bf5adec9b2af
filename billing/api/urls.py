from django.urls import path

from billing.api import budgets, views
from billing.api.webhooks import WebhookDeliveryListView, WebhookDetailView, WebhookListCreateView

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="aione-models"),
    path("billing/plan", views.CurrentPlanView.as_view(), name="aione-plan"),
    path("billing/account", views.BillingAccountView.as_view(), name="aione-account"),
    path("billing/budgets", budgets.BudgetListCreateView.as_view(), name="billing-budgets"),
    path("billing/budgets/<uuid:budget_id>", budgets.BudgetDetailView.as_view(), name="billing-budget"),
    path("billing/credit-grants", budgets.CreditGrantView.as_view(), name="billing-credit-grants"),
    path("billing/webhooks", WebhookListCreateView.as_view(), name="billing-webhooks"),
    path("billing/webhooks/<uuid:webhook_id>", WebhookDetailView.as_view(), name="billing-webhook"),
    path("billing/webhooks/<uuid:webhook_id>/deliveries", WebhookDeliveryListView.as_view(),
         name="billing-webhook-deliveries"),
]

# Invoices and credit notes (API.md §3, §10).
from billing.api import invoices  # noqa: E402

urlpatterns += [
    path("billing/invoices", invoices.InvoiceListView.as_view(), name="billing-invoices"),
    path("billing/invoices/<uuid:invoice_id>", invoices.InvoiceDetailView.as_view(), name="billing-invoice"),
    path("billing/invoices/<uuid:invoice_id>/lines/<uuid:line_id>/events", invoices.InvoiceLineEventsView.as_view(),
         name="billing-invoice-line-events"),
    path("billing/invoices/<uuid:invoice_id>/pdf", invoices.InvoicePdfView.as_view(), name="billing-invoice-pdf"),
    path("billing/invoices/<uuid:invoice_id>/credit-notes", invoices.InvoiceCreditNotesView.as_view(),
         name="billing-invoice-credit-notes"),
]
