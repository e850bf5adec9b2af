from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest

from portal import services
from portal.admin_scoping import FactsAdmin, OrganizationScopedAdmin, admin_organization
from portal.models import AuditLog, Department, Group, Member, Organization, Policy, PolicyAttachment
from portal.ram import evaluator


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    organization_path = "pk"
    list_display = ["name", "slug", "timezone", "status", "created_at"]
    list_filter = ["status", "timezone"]
    search_fields = ["name", "slug", "uuid"]
    readonly_fields = ["uuid", "created_at"]

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
        actor = services.Actor(member=getattr(request, "portal_member", None), label=request.user.get_username(),
                               source_ip=request.META.get("REMOTE_ADDR"))
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
