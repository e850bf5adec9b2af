"""Org-scoped Django admin.

Platform superusers see everything. An organization's owners and admins are staff and see,
add and change only their own organization's rows; plain members have no admin access.
Access is decided here from the member's role, not from Django's per-model permissions,
so that a new organization needs no permission setup.
"""

from typing import Any

from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from portal.models import Department, Group, Member, Organization
from portal.selectors import member_of


def admin_organization(request: HttpRequest) -> Organization | None:
    """The organization whose rows an org admin manages, or None for non-admins."""
    # The member the session acts as (PortalMemberMiddleware: the organization the switcher chose).
    member = getattr(request, "portal_member", None) or member_of(request.user)
    if member is None or not member.is_org_admin or not request.user.is_staff:
        return None
    return member.organization


class OrganizationScopedAdmin(admin.ModelAdmin):
    """Base for every tenant-owned model. `organization_path` leads from the model to its org."""

    organization_path = "organization"
    # Org admins may look at these models but never change them (e.g. the shared catalog).
    read_only_for_org_admins = False

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        organization = admin_organization(request)
        if organization is None:
            return queryset.none()
        if self.organization_path is None:
            return queryset
        return queryset.filter(**{self.organization_path: organization})

    def _allowed(self, request: HttpRequest, obj: Any = None, write: bool = False) -> bool:
        if request.user.is_active and request.user.is_superuser:
            return True
        if admin_organization(request) is None:
            return False
        if write and self.read_only_for_org_admins:
            return False
        if obj is not None and self.organization_path is not None:
            return self.get_queryset(request).filter(pk=obj.pk).exists()
        return True

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self._allowed(request, write=True)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj, write=True)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj, write=True)

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        exclude = list(super().get_exclude(request, obj) or [])
        if not request.user.is_superuser and self.organization_path == "organization":
            exclude.append("organization")  # set from the admin's own organization on save
        return exclude

    def get_list_filter(self, request: HttpRequest) -> Any:
        list_filter = list(super().get_list_filter(request))
        if not request.user.is_superuser:
            # Filtering by organization would list every organization's name.
            list_filter = [f for f in list_filter if f != "organization" and not str(f).startswith("organization")]
        return list_filter

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not request.user.is_superuser and self.organization_path == "organization" and not change:
            obj.organization = admin_organization(request)
        super().save_model(request, obj, form, change)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        self._narrow_choices(db_field, request, kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        self._narrow_choices(db_field, request, kwargs)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def _narrow_choices(self, db_field: Any, request: HttpRequest, kwargs: dict[str, Any]) -> None:
        # A select box must never offer another organization's departments, members or keys.
        if request.user.is_superuser:
            return
        organization = admin_organization(request)
        related = db_field.related_model
        if related is Organization:
            kwargs["queryset"] = Organization.objects.filter(pk=getattr(organization, "pk", None))
        elif related in (Department, Member, Group) or any(
            f.name == "organization" for f in related._meta.concrete_fields
        ):
            kwargs["queryset"] = related._default_manager.filter(organization=organization)


class FactsAdmin(OrganizationScopedAdmin):
    """Records of what happened (audit rows, usage events): readable, never added, changed or
    deleted by hand, superusers included."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
