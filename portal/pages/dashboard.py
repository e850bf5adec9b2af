"""The dashboard (API.md §11, `/`): the AIone dashboard's tech and business views (API.md §3) as
cards and charts, for the last `?range_days=` days (1-90, default 30) of the organization's
clock, for the organization or one department (`?team=`).

The numbers are usage.dashboard's `dashboard_of`, the very read `GET /api/v1/obs/dashboard`
renders; this page only lays them out. Decided as usage:GetDashboard on the department named
(or the whole organization), like the usage pages of the API."""

from django import forms
from django.shortcuts import render
from django.urls import path
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _

from portal.models import Department
from portal.pages.usage import DepartmentField, DepartmentScopedPage
from usage.dashboard import RANGE_DAYS, Dashboard, budget_progress, dashboard_of

DEFAULT_RANGE_DAYS = 30
RANGE_PRESETS = (1, 7, 30, 90)


class DashboardFilters(forms.Form):
    range_days = forms.IntegerField(required=False, min_value=RANGE_DAYS[0], max_value=RANGE_DAYS[1],
                                    label=_("Days"))
    team = DepartmentField(queryset=Department.objects.none(), required=False, label=_("Department"))

    def __init__(self, data, *, organization):
        super().__init__(data)
        self.fields["team"].queryset = Department.objects.filter(organization=organization)

    def clean_range_days(self) -> int:
        value = self.cleaned_data["range_days"]
        return DEFAULT_RANGE_DAYS if value is None else value


def charts(board: Dashboard) -> dict[str, dict]:
    """The chart specs portal.js draws (numbers as JSON numbers; the cards keep the Decimals)."""
    days = [date_format(point.day, "SHORT_DATE_FORMAT") for point in board.daily]
    money = board.currency or None
    return {
        "daily-requests": {"type": "line", "labels": days, "money": None, "stacked": False, "horizontal": False,
                           "datasets": [{"label": str(_("Requests")), "data": [p.requests for p in board.daily]}]},
        "daily-tokens": {"type": "bar", "labels": days, "money": None, "stacked": False, "horizontal": False,
                         "datasets": [{"label": str(_("Tokens")), "data": [p.tokens for p in board.daily]}]},
        "daily-cost": {"type": "line", "labels": days, "money": money, "stacked": False, "horizontal": False,
                       "datasets": [{"label": str(_("Cost")), "data": [float(p.cost) for p in board.daily]}]},
        "model-distribution": {
            "type": "doughnut", "labels": [share.model.code for share in board.models], "money": None,
            "stacked": False, "horizontal": False,
            "datasets": [{"label": str(_("Requests")), "data": [share.requests for share in board.models]}]},
        "team-cost": {
            "type": "bar", "labels": [team.department.name for team in board.teams], "money": money,
            "stacked": False, "horizontal": True,
            "datasets": [{"label": str(_("Cost")), "data": [float(team.cost) for team in board.teams]}]},
    }


class DashboardPage(DepartmentScopedPage):
    ram_actions = {"GET": "usage:GetDashboard"}
    filters_class = DashboardFilters

    def get(self, request):
        filters = self.filters
        context = {"filters": filters, "selected": self.filter_values(), "presets": RANGE_PRESETS,
                   "range_days": filters.cleaned_data.get("range_days", DEFAULT_RANGE_DAYS)}
        if not filters.errors:
            board = dashboard_of(request.organization, filters.cleaned_data["range_days"], department=self.department)
            # Percent figures as fractions, for the locale's percent format.
            shares = {"errors": board.error_rate_pct / 100, "rpm": board.rpm_usage_pct / 100,
                      "budget": None if board.budget_progress_pct is None else board.budget_progress_pct / 100}
            context.update({"board": board, "charts": charts(board), "shares": shares})
            if self.can("billing:ListBudgets"):
                context["budgets"] = [{"state": state, "share": state.progress_pct / 100}
                                      for state in budget_progress(request.organization, department=self.department)]
            context["may_see_keys"] = self.can("keys:ListKeys")
        return render(request, "portal/dashboard.html", context)


urlpatterns = [path("", DashboardPage.as_view(), name="dashboard")]
