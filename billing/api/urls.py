from django.urls import path

from billing.api import views
from billing.api.webhooks import WebhookDeliveryListView, WebhookDetailView, WebhookListCreateView

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="aione-models"),
    path("billing/plan", views.CurrentPlanView.as_view(), name="aione-plan"),
    path("billing/account", views.BillingAccountView.as_view(), name="aione-account"),
]

urlpatterns += [
    path("billing/webhooks", WebhookListCreateView.as_view(), name="billing-webhooks"),
    path("billing/webhooks/<uuid:webhook_id>", WebhookDetailView.as_view(), name="billing-webhook"),
    path("billing/webhooks/<uuid:webhook_id>/deliveries", WebhookDeliveryListView.as_view(),
         name="billing-webhook-deliveries"),
]
