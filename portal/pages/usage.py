"""The usage explorer (API.md §11): `/usage/` and `/usage/export.csv`, the page twin of AIone's
`GET /api/v1/obs/usage` (usage:QueryUsage).

Both answer from one read, `OrganizationUsage.over_days` (the API's too): whole local days of the
organization, filtered by department, key, model and member, grouped by up to two of day, model,
department, key and member. The CSV streams the very rows the table shows (all its pages).

`DepartmentScopedPage` is shared with the dashboard: a page of usage figures that `?team=` narrows
to one department, decided on that department's resource exactly as the API decides it."""

import csv
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import cached_property

from django import forms
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _

from billing.models import Model
from billing.money import decimal_string
from billing.selectors import account_currency
from keys.models import InferenceKey
from portal.api.permissions import RamTarget, permitted
from portal.models import Department, Member
from portal.pages.door import RamPage
from usage.query import for_organization
from usage.selectors import objects_named_in

MAX_RANGE_DAYS = 90
DEFAULT_RANGE_DAYS = 7
PAGE_SIZE = 100
CHART_SERIES = 8  # series drawn one by one; the rest are added up as "Other"
CHART_BARS = 20  # bars of a chart grouped by something other than the day

# What a page may group by, in the order of the select, with the engine's dimension (None: the day).
GROUPS = {"day": None, "model": "model", "department": "department", "key": "key", "member": "member"}
GROUP_LABELS = {"day": _("Day"), "model": _("Model"), "department": _("Department"), "key": _("Key"),
                "member": _("Member")}


# --- the department a page is narrowed to ---------------------------------------------------

class DepartmentField(forms.ModelChoiceField):
    """A department of the organization named by its uuid (as the API names it) or its id."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        text = str(value).strip()
        try:
            lookup = {"pk": int(text)} if text.isdigit() else {"uuid": uuid.UUID(text)}
        except ValueError:
            raise forms.ValidationError(_("No such department."), code="invalid_choice") from None
        found = self.queryset.filter(**lookup).first()
        if found is None:
            raise forms.ValidationError(_("No such department."), code="invalid_choice")
        return found


class Levels(forms.MultipleChoiceField):
    """Group-by levels from repeated `group_by` parameters; an empty one (the "then by" select
    left blank) is no level."""

    def to_python(self, value):
        return [level for level in super().to_python(value) if level]


class DepartmentScopedPage(RamPage):
    """A usage page that `?team=` narrows to one department. Decided, like its API twin, on that
    department's resource, or on the whole organization's when none is named (API.md §1). A member
    allowed on some departments only who names none is shown the first of those rather than
    refused: the decision is still the door's, on that department."""

    filters_class: type[forms.Form]

    def ram_resource(self, request) -> list[RamTarget]:
        return [RamTarget.department(self.department)]

    @cached_property
    def action(self) -> str:
        return self.ram_actions["GET"]

    @cached_property
    def allowed_departments(self) -> list[Department]:
        """The departments the member may see under this page's action: the select's choices."""
        return [department for department in Department.objects.filter(organization=self.request.organization)
                if permitted(self.request, self.action, RamTarget.department(department))]

    @cached_property
    def whole_organization_allowed(self) -> bool:
        return permitted(self.request, self.action, RamTarget())

    @cached_property
    def filters(self) -> forms.Form:
        form = self.filters_class(self.request.GET, organization=self.request.organization)
        form.is_valid()  # fields that are valid are in cleaned_data even when another is not
        choices = [] if not self.whole_organization_allowed else [("", _("All departments"))]
        form.fields["team"].widget.choices = choices + [(str(d.uuid), d.name) for d in self.allowed_departments]
        return form

    @cached_property
    def department(self) -> Department | None:
        named = self.filters.cleaned_data.get("team")
        if named is not None or "team" in self.filters.errors:
            return named
        if not self.whole_organization_allowed and self.allowed_departments:
            return self.allowed_departments[0]
        return None

    def filter_values(self) -> dict:
        """The filters as the form shows them, with the department actually shown selected."""
        return {"team": str(self.department.uuid) if self.department else ""}


# --- the explorer ---------------------------------------------------------------------------

class UsageFilters(forms.Form):
    start_date = forms.DateField(required=False, label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    end_date = forms.DateField(required=False, label=_("To (inclusive)"),
                               widget=forms.DateInput(attrs={"type": "date"}))
    team = DepartmentField(queryset=Department.objects.none(), required=False, label=_("Department"))
    key = forms.ModelChoiceField(queryset=InferenceKey.objects.none(), required=False, to_field_name="uuid",
                                 label=_("Key"), empty_label=_("All keys"))
    model = forms.ModelChoiceField(queryset=Model.objects.none(), required=False, to_field_name="code",
                                   label=_("Model"), empty_label=_("All models"))
    member = forms.ModelChoiceField(queryset=Member.objects.none(), required=False, to_field_name="uuid",
                                    label=_("Member"), empty_label=_("All members"))
    group_by = Levels(choices=list(GROUP_LABELS.items()), required=False, label=_("Group by"),
                                         help_text=_("One or two; the first is the outer level."))

    def __init__(self, data, *, organization):
        super().__init__(data)
        self.organization = organization
        self.fields["team"].queryset = Department.objects.filter(organization=organization)
        self.fields["key"].queryset = InferenceKey.objects.filter(organization=organization).order_by("name")
        self.fields["model"].queryset = Model.objects.order_by("code")
        self.fields["member"].queryset = Member.objects.filter(organization=organization).select_related(
            "user").order_by("user__username")
        self.fields["member"].label_from_instance = lambda member: member.user.get_username()

    def clean_group_by(self) -> list[str]:
        chosen = list(dict.fromkeys(self.cleaned_data["group_by"])) or ["day"]
        if len(chosen) > 2:
            raise forms.ValidationError(_("Group by at most two things."), code="too_many")
        return chosen

    def clean(self):
        data = super().clean()
        today = datetime.now(self.organization.zone).date()
        if "start_date" in data and "end_date" in data:
            end = data["end_date"] or (data["start_date"] + timedelta(days=DEFAULT_RANGE_DAYS - 1)
                                       if data["start_date"] else today)
            start = data["start_date"] or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
            if end < start:
                self.add_error("end_date", _("The last day comes before the first."))
            elif (end - start).days + 1 > MAX_RANGE_DAYS:
                self.add_error("end_date", _("At most %(days)s days at a time.") % {"days": MAX_RANGE_DAYS})
            else:
                data["start_date"], data["end_date"] = start, end
        return data


@dataclass(frozen=True)
class UsageLine:
    """One row of the table and of the CSV."""

    day: date | None
    department: str | None
    key: str | None
    model: str | None
    member: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: Decimal
    errors: int
    error_rate: Decimal
    avg_latency_ms: Decimal | None

    def label(self, level: str) -> str:
        value = getattr(self, level)
        if level == "day":
            return date_format(value, "SHORT_DATE_FORMAT")
        return value if value is not None else str(_("(none)"))


def _name_of(kind: str, obj) -> str:
    if kind == "member":
        return obj.user.get_username()
    if kind == "model":
        return obj.code
    return obj.name


def usage_lines(organization, first_day: date, last_day: date, group_by: list[str], **filters) -> list[UsageLine]:
    """The explorer's rows, names not ids, outer level first: days in order, anything else by
    its cost over the whole range (most expensive first), then by name."""
    dimensions = [GROUPS[level] for level in group_by if GROUPS[level]]
    rows = for_organization(organization).over_days(first_day, last_day + timedelta(days=1),
                                                    by_day="day" in group_by, group_by=dimensions, **filters)
    if not any(row.requests for row in rows):
        return []  # a daily series of nothing but empty days is no usage at all: the empty state
    named = objects_named_in(rows, *dimensions)
    lines = []
    for row in rows:
        names = {kind: (_name_of(kind, named[kind][row.group[kind]]) if row.group[kind] is not None else None)
                 for kind in dimensions}
        lines.append(UsageLine(
            day=row.bucket.start.date() if "day" in group_by else None,
            department=names.get("department"), key=names.get("key"), model=names.get("model"),
            member=names.get("member"), requests=row.requests, prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens, total_tokens=row.total_tokens, cost=row.cost,
            errors=row.errors, error_rate=row.error_rate,
            avg_latency_ms=row.latency_avg_ms.quantize(Decimal("0.1")) if row.latency_avg_ms is not None else None))
    cost_of: dict[tuple[str, str | None], Decimal] = {}
    for line in lines:
        for level in group_by:
            if level != "day":
                cost_of[level, getattr(line, level)] = cost_of.get((level, getattr(line, level)), 0) + line.cost

    def order(line: UsageLine) -> tuple:
        keys: list = []
        for level in group_by:
            value = getattr(line, level)
            keys += [value] if level == "day" else [-cost_of[level, value], value is None, value or ""]
        return tuple(keys)

    return sorted(lines, key=order)


def usage_chart(lines: list[UsageLine], group_by: list[str], days: list[date], currency: str) -> dict:
    """The chart of the table: cost over the days when grouped by day (a series per second level),
    else cost per outer group (split by the second level), in the chart spec portal.js draws."""
    outer, inner = group_by[0], (group_by[1] if len(group_by) > 1 else None)
    if "day" in group_by:
        series_level = next((level for level in group_by if level != "day"), None)
        labels = [date_format(day, "SHORT_DATE_FORMAT") for day in days]
        index = {day: i for i, day in enumerate(days)}
        by_series: dict[str, list[float]] = {}
        for line in lines:
            name = line.label(series_level) if series_level else str(_("Cost"))
            by_series.setdefault(name, [0.0] * len(days))[index[line.day]] += float(line.cost)
        datasets = _top_series(by_series)
        return {"type": "line" if series_level is None else "bar", "labels": labels, "datasets": datasets,
                "money": currency, "stacked": series_level is not None, "horizontal": False}
    totals: dict[str, Decimal] = {}
    for line in lines:
        totals[line.label(outer)] = totals.get(line.label(outer), Decimal(0)) + line.cost
    labels = sorted(totals, key=lambda name: (-totals[name], name))[:CHART_BARS]
    index = {name: i for i, name in enumerate(labels)}
    by_series = {}
    for line in lines:
        if line.label(outer) in index:
            name = line.label(inner) if inner else str(_("Cost"))
            by_series.setdefault(name, [0.0] * len(labels))[index[line.label(outer)]] += float(line.cost)
    return {"type": "bar", "labels": labels, "datasets": _top_series(by_series), "money": currency,
            "stacked": inner is not None, "horizontal": len(labels) > 8}


def _top_series(by_series: dict[str, list[float]]) -> list[dict]:
    ranked = sorted(by_series, key=lambda name: (-sum(by_series[name]), name))
    datasets = [{"label": name, "data": [round(v, 2) for v in by_series[name]]} for name in ranked[:CHART_SERIES]]
    rest = ranked[CHART_SERIES:]
    if rest:
        summed = [round(sum(by_series[name][i] for name in rest), 2) for i in range(len(by_series[rest[0]]))]
        datasets.append({"label": str(_("Other")), "data": summed})
    return datasets


class UsageExplorerPage(DepartmentScopedPage):
    ram_actions = {"GET": "usage:QueryUsage"}
    filters_class = UsageFilters

    @cached_property
    def query(self) -> dict | None:
        """The valid query (days, grouping, engine filters), or None when the form has errors."""
        filters = self.filters
        if filters.errors:
            return None
        data = filters.cleaned_data
        engine_filters: dict = {}
        if self.department is not None:
            engine_filters["departments"] = (self.department.pk,)
        for name, engine_name in (("key", "keys"), ("model", "models"), ("member", "members")):
            if data.get(name) is not None:
                engine_filters[engine_name] = (data[name].pk,)
        return {"first_day": data["start_date"], "last_day": data["end_date"], "group_by": data["group_by"],
                "filters": engine_filters}

    def lines(self) -> list[UsageLine]:
        query = self.query
        return usage_lines(self.request.organization, query["first_day"], query["last_day"], query["group_by"],
                           **query["filters"])

    def get(self, request):
        selected = {**self.filter_values(), "start_date": request.GET.get("start_date", ""),
                    "end_date": request.GET.get("end_date", "")}
        context = {"filters": self.filters, "group_labels": GROUP_LABELS, "selected": selected,
                   "levels": request.GET.getlist("group_by")}
        query = self.query
        if query is not None:
            lines = self.lines()
            currency = account_currency(request.organization)
            first, last = query["first_day"], query["last_day"]
            days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
            page = Paginator(lines, PAGE_SIZE).get_page(request.GET.get("page"))
            context.update({
                "query": query, "currency": currency, "lines": page, "line_count": len(lines),
                "levels": query["group_by"], "chart": usage_chart(lines, query["group_by"], days, currency),
                "totals": _totals(lines), "export_query": _without_page(request.GET),
                "selected": {**self.filter_values(), "start_date": first.isoformat(), "end_date": last.isoformat()},
            })
        return render(request, "portal/usage.html", context)


class UsageExportPage(UsageExplorerPage):
    """The table as CSV, streamed row by row (all of its pages), with a header row."""

    def get(self, request):
        if self.query is None:
            return super().get(request)  # the page with the form's errors
        currency = account_currency(request.organization)
        levels = self.query["group_by"]
        lines = self.lines()
        header = [str(GROUP_LABELS[level]) for level in levels] + [
            "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost", "currency", "errors",
            "error_rate", "avg_latency_ms"]

        def rows():
            yield header
            for line in lines:
                yield [line.day.isoformat() if level == "day" else (getattr(line, level) or "") for level in levels] + [
                    line.requests, line.prompt_tokens, line.completion_tokens, line.total_tokens,
                    decimal_string(line.cost), currency, line.errors, str(line.error_rate.quantize(Decimal("0.0001"))),
                    "" if line.avg_latency_ms is None else str(line.avg_latency_ms)]

        writer = csv.writer(_Echo())
        response = StreamingHttpResponse((writer.writerow(row) for row in rows()),
                                         content_type="text/csv; charset=utf-8")
        first, last = self.query["first_day"], self.query["last_day"]
        response["Content-Disposition"] = f'attachment; filename="usage_{first.isoformat()}_{last.isoformat()}.csv"'
        return response


class _Echo:
    """A file that hands back what is written: csv.writer then yields each row as text."""

    def write(self, value: str) -> str:
        return value


def _totals(lines: list[UsageLine]) -> dict:
    requests = sum(line.requests for line in lines)
    errors = sum(line.errors for line in lines)
    return {"requests": requests, "total_tokens": sum(line.total_tokens for line in lines),
            "cost": sum((line.cost for line in lines), Decimal(0)), "errors": errors,
            "error_rate": Decimal(errors) / Decimal(requests) if requests else Decimal(0)}


def _without_page(query) -> str:
    query = query.copy()
    query.pop("page", None)
    return query.urlencode()


urlpatterns = [
    path("usage/", UsageExplorerPage.as_view(), name="usage"),
    path("usage/export.csv", UsageExportPage.as_view(), name="usage-export"),
]
