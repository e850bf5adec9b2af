from django.urls import path

from billing.api import views

urlpatterns = [
    path("models", views.ModelListView.as_view(), name="aione-models"),
    path("billing/plan", views.CurrentPlanView.as_view(), name="aione-plan"),
    path("billing/account", views.BillingAccountView.as_view(), name="aione-account"),
]
