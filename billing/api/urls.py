from django.urls import path

from billing.api import views

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="aione-models"),
    path("billing/plan", views.CurrentPlanView.as_view(), name="aione-plan"),
    path("billing/account", views.BillingAccountView.as_view(), name="aione-account"),
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
