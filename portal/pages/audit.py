"""The audit log page (API.md §11): who changed which key, policy, budget or member, when and
from where; newest first."""

from django import forms
from django.shortcuts import render
from django.urls import path
from django.utils.translation import gettext_lazy as _

from portal.api.permissions import whole_collection
from portal.pages.door import RamPage
from portal.selectors import audit_trail

PAGE_SIZE = 50


class AuditFilters(forms.Form):
    action = forms.CharField(required=False, max_length=100, label=_("Action"))
    target_type = forms.CharField(required=False, max_length=50, label=_("Object type"))
    target_id = forms.CharField(required=False, max_length=64, label=_("Object id"))
    actor_label = forms.CharField(required=False, max_length=200, label=_("Who"))
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


class AuditLogPage(RamPage):
    ram_actions = {"GET": "ram:ListAuditLog"}
    ram_resource = whole_collection

    def get(self, request):
        filters = AuditFilters(request.GET)
        entries, older = [], None
        if filters.is_valid():
            wanted = {k: v for k, v in filters.cleaned_data.items() if k != "before" and v}
            entries = audit_trail(request.organization, before_id=filters.cleaned_data["before"],
                                  limit=PAGE_SIZE + 1, **wanted)
            if len(entries) > PAGE_SIZE:
                entries = entries[:PAGE_SIZE]
                query = request.GET.copy()
                query["before"] = entries[-1].pk
                older = query.urlencode()
        return render(request, "portal/audit.html", {
            "filters": filters, "entries": entries, "older": older,
            "filtered": any(v for k, v in request.GET.items() if k != "before"),
            "first_page": not request.GET.get("before"),
        })


urlpatterns = [path("audit/", AuditLogPage.as_view(), name="audit")]
