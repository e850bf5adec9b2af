from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from billing.models import Model
from portal import services
from portal.admin_scoping import (
    FactsAdmin,
    OrganizationScopedAdmin,
    ReadOnlyInline,
    admin_actor,
    admin_organization,
)
from portal.models import AuditLog, Department, Group, Member, Organization, Policy, PolicyAttachment
from portal.ram import evaluator
from usage.query import for_organization
from usage.timebuckets import Granularity, last_days

USAGE_CHART_DAYS = 30


class CatalogModelsField(forms.MultipleChoiceField):
    """Model codes chosen from the catalog's enabled models, stored as a list of codes (the
    shape the API takes). Codes already stored stay offered, so that a model disabled since does
    not make every later save of the form fail."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.SelectMultiple(attrs={"size": 8}))
        super().__init__(choices=self.catalog_choices, **kwargs)

    @staticmethod
    def catalog_choices() -> list[tuple[str, str]]:
        return [(code, f"{code} ({name})") for code, name in
                Model.objects.filter(enabled=True).order_by("code").values_list("code", "name")]

    def keep_stored(self, stored: list[str] | None) -> None:
        offered = {code for code, _label in self.choices}
        extra = [(code, _("%(code)s (not enabled in the catalog)") % {"code": code})
                 for code in stored or [] if code not in offered]
        if extra:
            self.choices = [*self.choices, *extra]


class DepartmentForm(forms.ModelForm):
    allowed_models = CatalogModelsField(
        label=_("Allowed models"),
        help_text=_("None selected: the department may call every enabled model of the plan."))

    class Meta:
        model = Department
        fields = ["organization", "name", "parent", "allowed_models", "discount", "rpm_limit", "tpm_limit",
                  "contact_name", "contact_email", "remark"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].keep_stored(self.instance.allowed_models)


class DepartmentsOfOrganization(ReadOnlyInline):
    model = Department
    fields = ["name", "parent", "discount", "contact_name", "created_at"]
    verbose_name_plural = _("departments")


class MembersOfOrganization(ReadOnlyInline):
    model = Member
    fields = ["user", "role", "language", "created_at"]
    verbose_name_plural = _("members")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("user")


def daily_cost_chart(organization: Organization) -> dict[str, Any]:
    """The last 30 days' cost, one bar per local day, from the usage engine (as the dashboard
    reads it), in the chart spec portal.js draws."""
    start, end = last_days(organization.zone, USAGE_CHART_DAYS, timezone.now())
    rows = for_organization(organization).run(start, end, granularity=Granularity.of("day"),
                                              sums=("cost_units",), latency_range=False).rows
    account = getattr(organization, "billing_account", None)
    return {
        "type": "bar",
        "labels": [row.bucket.start.date().isoformat() for row in rows],
        "datasets": [{"label": str(_("Cost per day")), "data": [float(row.cost) for row in rows]}],
        "money": account.currency if account else None,
        "stacked": False, "horizontal": False,
    }


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    organization_path = "pk"
    list_display = ["name", "slug", "timezone", "status", "created_at"]
    list_filter = ["status", "timezone"]
    search_fields = ["name", "slug", "uuid"]
    readonly_fields = ["uuid", "created_at"]
    inlines = [DepartmentsOfOrganization, MembersOfOrganization]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> Any:
        organization = self.get_object(request, object_id)
        if organization is not None and self.has_view_permission(request, organization):
            extra_context = {**(extra_context or {}), "usage_chart": daily_cost_chart(organization),
                             "usage_chart_days": USAGE_CHART_DAYS}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if request.user.is_superuser:
            return queryset
        organization = admin_organization(request)
        return queryset.filter(pk=getattr(organization, "pk", None))

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        return admin.ModelAdmin.get_exclude(self, request, obj)


@admin.register(Department)
class DepartmentAdmin(OrganizationScopedAdmin):
    form = DepartmentForm
    list_display = ["name", "organization", "parent", "discount", "contact_name", "created_at"]
    list_filter = ["organization"]
    search_fields = ["name", "uuid", "contact_name", "contact_email", "remark"]
    readonly_fields = ["uuid", "created_at"]
    list_select_related = ["organization", "parent"]


class MemberAddForm(forms.ModelForm):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput, required=False)

    class Meta:
        model = Member
        fields = ["role"]


@admin.register(Member)
class MemberAdmin(OrganizationScopedAdmin):
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["organization", "role"]
    search_fields = ["user__username", "user__email", "uuid"]
    readonly_fields = ["uuid", "user", "created_at"]
    list_select_related = ["user", "organization"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = MemberAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            fields = ["username", "email", "password", "role"]
            return (["organization"] + fields) if request.user.is_superuser else fields
        return super().get_fields(request, obj)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Member, form: Any, change: bool) -> None:
        actor = admin_actor(request)
        if change:
            services.set_member_role(actor=actor, member=obj, role=form.cleaned_data["role"])
            return
        organization = form.cleaned_data.get("organization") or admin_organization(request)
        created = services.create_member(
            actor=actor,
            organization=organization,
            username=form.cleaned_data["username"],
            email=form.cleaned_data.get("email", ""),
            password=form.cleaned_data.get("password") or None,
            role=form.cleaned_data["role"],
        )
        obj.pk = created.pk


@admin.register(Group)
class GroupAdmin(OrganizationScopedAdmin):
    list_display = ["name", "organization", "created_at"]
    list_filter = ["organization"]
    search_fields = ["name", "uuid", "description"]
    readonly_fields = ["uuid", "created_at"]
    filter_horizontal = ["members"]


@admin.register(AuditLog)
class AuditLogAdmin(FactsAdmin):
    """The audit trail is append-only."""

    list_display = ["created_at", "organization", "actor_label", "action", "target_type", "target_id", "source_ip"]
    list_filter = ["organization", "action", "target_type"]
    search_fields = ["actor_label", "action", "target_id"]
    date_hierarchy = "created_at"


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = ["organization", "name", "description", "document"]

    def clean_document(self) -> Any:
        # The same validation as the API: a malformed document never reaches the database.
        document = self.cleaned_data["document"]
        try:
            evaluator.validate_policy_document(document)
        except evaluator.PolicyValidationError as error:
            raise ValidationError(error.errors) from error
        return document


@admin.register(Policy)
class PolicyAdmin(OrganizationScopedAdmin):
    """Custom policies of the organization, and the shared system policies (read-only)."""

    list_display = ["name", "policy_type", "organization", "description", "updated_at"]
    list_filter = ["policy_type", "organization"]
    search_fields = ["name", "description"]
    readonly_fields = ["uuid", "policy_type", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> Any:
        queryset = admin.ModelAdmin.get_queryset(self, request)
        if request.user.is_superuser:
            return queryset
        organization = admin_organization(request)
        if organization is None:
            return queryset.none()
        return queryset.filter(Q(organization=organization) | Q(organization__isnull=True))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.policy_type == Policy.Type.SYSTEM:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.policy_type == Policy.Type.SYSTEM:
            return False
        return super().has_delete_permission(request, obj)

    form = PolicyForm


@admin.register(PolicyAttachment)
class PolicyAttachmentAdmin(OrganizationScopedAdmin):
    list_display = ["policy", "member", "group", "organization", "created_at"]
    list_filter = ["organization", "policy"]
    search_fields = ["policy__name", "member__user__username", "group__name"]
    list_select_related = ["policy", "member__user", "group", "organization"]
