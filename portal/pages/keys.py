"""The API key pages (API.md §11): the list, a new key, one key, and its operations.

Each operation is its own POST URL with its own RAM action, decided by the door exactly as the
AIone key API (keys/api/views.py) decides it, and calls the same service. The rules a key's fields
obey are the API's: the forms below only turn what a browser sends (a select, a textarea of
lines, a local date and time) into the API's request and let the API's serializer judge it
(KeyCreateRequest, KeyUpdateRequest, RotateQuery), so a rule changed there changes here.

A secret (from creation or rotation) is shown once. The POST puts it in the session and redirects
to the key's page; that page's next GET takes it out again and shows it, uncacheable. Reloading
shows no secret and never re-submits the POST, and the secret is in no URL and no message."""

import uuid
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

from billing.models import Model
from billing.selectors import account_currency
from keys import services
from keys.api.serializers import KeyCreateRequest, KeyUpdateRequest, RotateQuery
from keys.models import InferenceKey, KeyStatus
from keys.selectors import live_keys
from portal.api.permissions import RamTarget, narrowed_list, the_object
from portal.models import Department, Member
from portal.pages.door import RamPage
from usage.query import for_organization
from usage.timebuckets import last_days

PAGE_SIZE = 25
USAGE_SUMMARY_DAYS = 7
SECRET_SESSION_KEY = "portal:new-secret:{uuid}"

STATUS_SHOWN = {
    KeyStatus.ACTIVE: (_("Active"), "good"),
    KeyStatus.DISABLED: (_("Disabled"), "warn"),
    KeyStatus.EXPIRED: (_("Expired"), "bad"),
    KeyStatus.REVOKED: (_("Revoked"), "bad"),
}


# --- forms: the browser's shape, the API's rules ---------------------------------------------------

def _lines(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def catalog_choices(also: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The catalog's enabled models, plus codes a key already allows that are no longer offered
    (shown, so that saving reports them instead of silently dropping them)."""
    enabled = Model.objects.filter(enabled=True).order_by("provider", "code")
    offered = [(model.code, f"{model.name} ({model.code})") for model in enabled]
    known = {code for code, _label in offered}
    return offered + [(code, _("%(code)s (not available)") % {"code": code}) for code in also if code not in known]


class JudgedByTheAPI(forms.Form):
    """A form whose fields only parse; `rules` (the API's request serializer) judges the result,
    and its complaints are shown next to the fields they concern. `judged` is its validated data."""

    rules: type[serializers.Serializer]
    rule_of_field: dict[str, str] = {}  # a form field named differently from the API's

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The browser's own hints (min, max, maxlength), read off the same rules.
        rules = self.rules().fields
        for name, field in self.fields.items():
            rule = rules.get(self.rule_of_field.get(name, name))
            for limit, attribute in (("min_value", "min"), ("max_value", "max"), ("max_length", "maxlength")):
                if getattr(rule, limit, None) is not None:
                    field.widget.attrs[attribute] = getattr(rule, limit)

    def request_of(self, cleaned: dict) -> dict:
        """The API request these fields amount to (only the fields that parsed)."""
        raise NotImplementedError

    def clean(self):
        cleaned = super().clean()
        judge = self.rules(data=self.request_of(cleaned))
        if judge.is_valid():
            self.judged = judge.validated_data
            return cleaned
        field_of_rule = {rule: name for name, rule in self.rule_of_field.items()}
        for rule, problems in judge.errors.items():
            name = field_of_rule.get(rule, rule)
            if name not in self.fields:
                self.add_error(None, problems)
            elif name not in self._errors:  # a field that did not parse already says why
                self.add_error(name, problems)
        return cleaned


class KeyLimitsForm(JudgedByTheAPI):
    """What `keys:UpdateKey` changes (the API's KeyUpdateRequest)."""

    rules = KeyUpdateRequest

    name = forms.CharField(label=_("Name"))
    rpm_limit = forms.IntegerField(label=_("Requests per minute"), required=False,
                                   help_text=_("Leave empty for no limit of the key’s own (the department’s and "
                                               "the plan’s limits still apply)."))
    tpm_limit = forms.IntegerField(label=_("Tokens per minute"), required=False,
                                   help_text=_("Leave empty for no limit of the key’s own."))
    models_allowed = forms.MultipleChoiceField(
        label=_("Allowed models"), required=False, widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text=_("Select none to allow every model the department and the plan allow."))
    allowed_ips = forms.CharField(
        label=_("Allowed IP addresses"), required=False, widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("One IPv4 or IPv6 address or CIDR network per line, for example 10.0.0.0/8. "
                    "Leave empty to allow any address."))

    def __init__(self, *args, allowed_codes: Sequence[str] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["models_allowed"].choices = catalog_choices(allowed_codes)

    @classmethod
    def of_key(cls, key: InferenceKey, data=None) -> "KeyLimitsForm":
        initial = {"name": key.name, "rpm_limit": key.rpm_limit, "tpm_limit": key.tpm_limit,
                   "models_allowed": key.models_allowed, "allowed_ips": "\n".join(key.allowed_ips)}
        return cls(data, initial=initial, allowed_codes=key.models_allowed, prefix="limits")

    def request_of(self, cleaned: dict) -> dict:
        request = {name: cleaned[name] for name in ("name", "rpm_limit", "tpm_limit") if name in cleaned}
        if "models_allowed" in cleaned:
            request["models_allowed"] = list(cleaned["models_allowed"])
        if "allowed_ips" in cleaned:
            request["allowed_ips"] = _lines(cleaned["allowed_ips"])
        return request


class NewKeyForm(KeyLimitsForm):
    """What `keys:CreateKey` takes (the API's KeyCreateRequest), plus the owner the portal may name."""

    rules = KeyCreateRequest
    rule_of_field = {"department": "team_id"}

    department = forms.ModelChoiceField(label=_("Department"), queryset=Department.objects.none(),
                                        to_field_name="uuid", empty_label=None)
    owner = forms.ModelChoiceField(label=_("Owner"), queryset=Member.objects.none(), to_field_name="uuid",
                                   required=False, empty_label=_("Me"),
                                   help_text=_("The member the key’s usage is attributed to."))
    expires_at = forms.DateTimeField(label=_("Expires"), required=False,
                                     widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                                format="%Y-%m-%dT%H:%M"),
                                     help_text=_("In the organization’s time zone. Leave empty for a key that "
                                                 "does not expire."))
    is_sandbox = forms.BooleanField(label=_("Sandbox key"), required=False)

    field_order = ["name", "department", "owner", "rpm_limit", "tpm_limit", "models_allowed", "allowed_ips",
                   "expires_at", "is_sandbox"]

    def __init__(self, *args, departments, members, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["department"].queryset = departments
        self.fields["owner"].queryset = members
        self.fields["owner"].label_from_instance = lambda member: member.user.get_username()

    def request_of(self, cleaned: dict) -> dict:
        request = super().request_of(cleaned)
        if cleaned.get("department") is not None:
            request["team_id"] = cleaned["department"].uuid
        for name in ("expires_at", "is_sandbox"):
            if name in cleaned:
                request[name] = cleaned[name]
        return request


class RotateForm(JudgedByTheAPI):
    rules = RotateQuery

    grace_hours = forms.IntegerField(
        label=_("Hours the current secret keeps working"), required=False,
        initial=RotateQuery().fields["grace_hours"].default,
        help_text=_("0 stops the current secret at once."))

    def request_of(self, cleaned: dict) -> dict:
        return {"grace_hours": cleaned["grace_hours"]} if cleaned.get("grace_hours") is not None else {}


class KeyFilters(forms.Form):
    team = forms.ModelChoiceField(label=_("Department"), queryset=Department.objects.none(), to_field_name="uuid",
                                  required=False, empty_label=_("All departments"))
    status = forms.ChoiceField(label=_("Status"), required=False,
                               choices=[("", _("Any status"))] + [(status, label) for status, (label, _tone)
                                                                  in STATUS_SHOWN.items()])

    def __init__(self, *args, organization, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Department.objects.filter(organization=organization).order_by("name")


# --- what the pages show -------------------------------------------------------------------------

def shown(key: InferenceKey) -> InferenceKey:
    """The key with its status as the gateway applies it, labelled for the page."""
    key.shown_status = key.effective_status
    key.status_label, key.status_tone = STATUS_SHOWN[key.shown_status]
    return key


def hold_secret_for_one_response(request, issued: services.IssuedKey) -> None:
    request.session[SECRET_SESSION_KEY.format(uuid=issued.key.uuid)] = issued.secret


def take_secret(request, key: InferenceKey) -> str | None:
    return request.session.pop(SECRET_SESSION_KEY.format(uuid=key.uuid), None)


class OrganizationKeys:
    """The keys a page lists and finds, and how one is decided on: the API's own."""

    def get_queryset(self):
        return live_keys(self.request.organization).select_related("owner__user")

    def ram_target_of(self, key: InferenceKey) -> RamTarget:
        return RamTarget(key.pk, key.department_id)


def creatable_departments(page: RamPage) -> list[Department]:
    """The departments the member may create keys in: the door's decision on each, as the API's
    key creation is decided on the department chosen."""
    departments = Department.objects.filter(organization=page.request.organization).order_by("name")
    return [department for department in departments if page.can("keys:CreateKey", RamTarget("*", department.pk))]


# --- the list ------------------------------------------------------------------------------------

class KeyListPage(OrganizationKeys, RamPage):
    ram_actions = {"GET": "keys:ListKeys"}
    ram_resource = narrowed_list

    def get(self, request):
        filters = KeyFilters(request.GET, organization=request.organization)
        keys = self.queryset.order_by("-created_at", "-id")
        if filters.is_valid():
            if filters.cleaned_data["team"] is not None:
                keys = keys.filter(department=filters.cleaned_data["team"])
            if filters.cleaned_data["status"]:
                keys = keys.filter(status=filters.cleaned_data["status"])
        page = Paginator(keys, PAGE_SIZE).get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        return render(request, "portal/keys/list.html", {
            "filters": filters, "page": page, "keys": [shown(key) for key in page], "query": query.urlencode(),
            "filtered": any(value for name, value in request.GET.items() if name != "page"),
            "can_create": bool(creatable_departments(self)),
        })


# --- a new key -----------------------------------------------------------------------------------

class NewKeyPage(RamPage):
    ram_actions = {"GET": "keys:CreateKey", "POST": "keys:CreateKey"}

    def ram_resource(self, request):
        # As the API: a new key is decided on the department it is to belong to, before anything
        # else in the form is judged. Until one is chosen (the empty form, an unknown department)
        # the form is for whoever may create keys in some department.
        if self.chosen_department is not None:
            return (RamTarget("*", self.chosen_department.pk),)
        return (RamTarget("*", self.departments[0].pk) if self.departments else RamTarget(),)

    @cached_property
    def chosen_department(self) -> Department | None:
        try:
            wanted = uuid.UUID(self.request.POST.get("department", ""))
        except ValueError:
            return None
        return Department.objects.filter(organization=self.request.organization, uuid=wanted).first()

    @cached_property
    def departments(self) -> list[Department]:
        return creatable_departments(self)

    def form(self, data=None) -> NewKeyForm:
        organization = self.request.organization
        allowed = Department.objects.filter(pk__in=[department.pk for department in self.departments]).order_by("name")
        members = Member.objects.filter(organization=organization).select_related("user").order_by("user__username")
        initial = {}
        wanted = self.request.GET.get("team")
        if wanted:
            initial["department"] = next((d for d in self.departments if str(d.uuid) == wanted), None)
        return NewKeyForm(data, initial=initial, departments=allowed, members=members)

    def get(self, request):
        return self.render(self.form())

    def render(self, form: NewKeyForm):
        return render(self.request, "portal/keys/new.html", {"form": form, "has_departments": bool(self.departments)})

    def post(self, request):
        form = self.form(request.POST)
        if not form.is_valid():
            return self.render(form)
        judged = form.judged
        issued = services.create_inference_key(
            actor=self.actor(), department=form.cleaned_data["department"], owner=form.cleaned_data["owner"],
            name=judged["name"], models_allowed=judged["models_allowed"], allowed_ips=judged["allowed_ips"],
            rpm_limit=judged["rpm_limit"], tpm_limit=judged["tpm_limit"], is_sandbox=judged["is_sandbox"],
            expires_at=judged["expires_at"],
        )
        hold_secret_for_one_response(request, issued)
        messages.success(request, _("The key “%(name)s” was created.") % {"name": issued.key.name})
        return HttpResponseRedirect(reverse("portal:key", args=[issued.key.uuid]))


# --- one key -------------------------------------------------------------------------------------

class KeyPage(OrganizationKeys, RamPage):
    ram_actions = {"GET": "keys:GetKey"}
    ram_resource = the_object

    def get(self, request, uuid):
        return key_page(self, self.get_object(), secret=take_secret(request, self.get_object()))


def key_page(page: RamPage, key: InferenceKey, *, secret: str | None = None, limits: KeyLimitsForm | None = None,
             rotate: RotateForm | None = None):
    """The key's page: everything about it, the controls the member may use, and once, a secret."""
    request, organization = page.request, page.request.organization
    target = page.ram_target_of(key)
    names = dict(Model.objects.filter(code__in=key.models_allowed).values_list("code", "name"))
    allowed = {action: page.can(f"keys:{action}", target)
               for action in ("UpdateKey", "RotateKey", "DisableKey", "EnableKey", "DeleteKey")}
    context = {
        "key": shown(key), "secret": secret, "allowed": allowed,
        "limits": limits or KeyLimitsForm.of_key(key), "rotate": rotate or RotateForm(prefix="rotate"),
        "in_grace": bool(key.rotate_grace_until and key.rotate_grace_until > timezone.now()),
        "allowed_models": [(code, names.get(code)) for code in key.models_allowed],
    }
    if page.can("usage:QueryUsage", RamTarget.department(key.department)):
        # One row from the engine, over the fine level that keeps keys: cheap whatever the volume.
        start, end = last_days(organization.zone, USAGE_SUMMARY_DAYS, timezone.now())
        context["usage"] = for_organization(organization).total(
            start, end, keys=(key.pk,), sums=("prompt_tokens", "completion_tokens", "cost_units", "errors"),
            latency_range=False)
        context["usage_days"] = USAGE_SUMMARY_DAYS
        context["currency"] = account_currency(organization)
    response = render(request, "portal/keys/detail.html", context)
    if secret is not None:
        add_never_cache_headers(response)  # the secret must not come back from a cache or history
    return response


class KeyOperation(OrganizationKeys, RamPage):
    """A POST on one key, decided on that key under its own action."""

    ram_resource = the_object

    def back_to_key(self) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("portal:key", args=[self.get_object().uuid]))


class EditKeyPage(KeyOperation):
    ram_actions = {"POST": "keys:UpdateKey"}

    def post(self, request, uuid):
        key = self.get_object()
        form = KeyLimitsForm.of_key(key, request.POST)
        if not form.is_valid():
            return key_page(self, key, limits=form)
        # Only what changed, so the audit trail names the fields that really did.
        changes = {name: value for name, value in form.judged.items() if getattr(key, name) != value}
        if changes:
            services.update_inference_key(actor=self.actor(), key=key, **changes)
            messages.success(request, _("The key’s settings were saved."))
        else:
            messages.info(request, _("Nothing was changed."))
        return self.back_to_key()


class RotateKeyPage(KeyOperation):
    ram_actions = {"POST": "keys:RotateKey"}

    def post(self, request, uuid):
        key = self.get_object()
        form = RotateForm(request.POST, prefix="rotate")
        if not form.is_valid():
            return key_page(self, key, rotate=form)
        grace = form.judged["grace_hours"]
        issued = services.rotate_inference_key(actor=self.actor(), key=key, grace=timedelta(hours=grace))
        hold_secret_for_one_response(request, issued)
        messages.success(request, _("The key was rotated."))
        return self.back_to_key()


class DisableKeyPage(KeyOperation):
    ram_actions = {"POST": "keys:DisableKey"}

    def post(self, request, uuid):
        services.disable_inference_key(actor=self.actor(), key=self.get_object())
        messages.success(request, _("The key was disabled: calls with it are refused from now on."))
        return self.back_to_key()


class EnableKeyPage(KeyOperation):
    ram_actions = {"POST": "keys:EnableKey"}

    def post(self, request, uuid):
        try:
            services.enable_inference_key(actor=self.actor(), key=self.get_object())
        except ValueError:
            messages.error(request, _("A revoked key cannot be enabled."))
        else:
            messages.success(request, _("The key was enabled."))
        return self.back_to_key()


class DeleteKeyPage(KeyOperation):
    ram_actions = {"POST": "keys:DeleteKey"}

    def post(self, request, uuid):
        key = self.get_object()
        services.delete_inference_key(actor=self.actor(), key=key)
        messages.success(request, _("The key “%(name)s” was deleted. Its usage history stays.") % {"name": key.name})
        return HttpResponseRedirect(reverse("portal:keys"))


urlpatterns = [
    path("keys/", KeyListPage.as_view(), name="keys"),
    path("keys/new/", NewKeyPage.as_view(), name="new-key"),
    path("keys/<uuid:uuid>/", KeyPage.as_view(), name="key"),
    path("keys/<uuid:uuid>/edit/", EditKeyPage.as_view(), name="edit-key"),
    path("keys/<uuid:uuid>/rotate/", RotateKeyPage.as_view(), name="rotate-key"),
    path("keys/<uuid:uuid>/disable/", DisableKeyPage.as_view(), name="disable-key"),
    path("keys/<uuid:uuid>/enable/", EnableKeyPage.as_view(), name="enable-key"),
    path("keys/<uuid:uuid>/delete/", DeleteKeyPage.as_view(), name="delete-key"),
]
