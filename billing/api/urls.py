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
