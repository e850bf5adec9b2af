from django.urls import path

from portal.api import ram_views as views

urlpatterns = [
    path("ram/actions", views.ActionListView.as_view(), name="ram-actions"),
    path("ram/policies", views.PolicyListCreateView.as_view(), name="ram-policies"),
    path("ram/policies/<str:name>", views.PolicyDetailView.as_view(), name="ram-policy"),
    path("ram/policies/<str:name>/attach", views.PolicyAttachView.as_view(), name="ram-policy-attach"),
    path("ram/policies/<str:name>/detach", views.PolicyDetachView.as_view(), name="ram-policy-detach"),
    path("ram/members", views.MemberListView.as_view(), name="ram-members"),
    path("ram/simulate", views.SimulateView.as_view(), name="ram-simulate"),
]
