"""Org-scoped Django admin.

Platform superusers see everything. An organization's owners and admins are staff and see,
add and change only their own organization's rows; plain members have no admin access.
Access is decided here from the member's role, not from Django's per-model permissions,
so that a new organization needs no permission setup.

What every admin page shows the same way lives here too: times in the viewing zone with the
zone named (PortalMemberMiddleware activates the organization's), values a model admin asks to
show formatted (`display_formats`: money, in the app that knows currencies), and a link from
each object to its audit trail.
"""

import ipaddress
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import models
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.models import AuditLog, Department, Group, Member, Organization
from portal.selectors import member_of
from portal.services import Actor


def admin_organization(request: HttpRequest) -> Organization | None:
    """The organization whose rows an org admin manages, or None for non-admins."""
    # The member the session acts as (PortalMemberMiddleware: the organization the switcher chose).
    member = getattr(request, "portal_member", None) or member_of(request.user)
    if member is None or not member.is_org_admin or not request.user.is_staff:
        return None
    return member.organization


def admin_actor(request: HttpRequest) -> Actor:
    """Who an admin write is recorded as: the member the session acts as (None for a platform
    superuser without one), named by the username, from the client's address."""
    return Actor(member=getattr(request, "portal_member", None), label=request.user.get_username(),
                 source_ip=request.META.get("REMOTE_ADDR"))


# --- how values are shown ------------------------------------------------------------------------

def in_viewing_zone(value: datetime) -> str:
    """`2026-12-01 10:00 (Asia/Shanghai)`: the time in the active zone, which it names (Django's
    default shows the converted time without saying in which zone it is)."""
    return _("%(time)s (%(zone)s)") % {"time": f"{timezone.localtime(value):%Y-%m-%d %H:%M}",
                                       "zone": timezone.get_current_timezone_name()}


def shown_column(name: str, render: Callable[[Any, Any], str], description: Any) -> Callable[[Any], str]:
    """A list column or read-only field showing `render(obj, value)` for the field `name`, sorted
    by the field and keeping its CSS class (`column-<name>`, `field-<name>`)."""

    def column(obj: Any) -> str:
        value = getattr(obj, name)
        return admin.site.empty_value_display if value is None else render(obj, value)

    column.__name__ = name
    column.short_description = description  # type: ignore[attr-defined]
    column.admin_order_field = name  # type: ignore[attr-defined]
    return column


def _swap(fields: Iterable[Any], columns: dict[str, Any]) -> list[Any]:
    return [tuple(_swap(item, columns)) if isinstance(item, (list, tuple)) else columns.get(item, item)
            for item in fields]


class ShownFormatted:
    """Mixin for model and inline admins: DateTimeFields in the viewing zone with its name, and
    the fields of `display_formats` ({name: render(obj, value)}) formatted, in list columns and
    read-only fields. Editable fields keep their widgets (a datetime widget is told its zone)."""

    display_formats: dict[str, Callable[[Any, Any], str]] = {}

    def shown_as(self, name: Any) -> Any:
        if not isinstance(name, str):
            return name
        columns = self.__dict__.setdefault("_shown_columns", {})
        if name not in columns:
            try:
                field = self.model._meta.get_field(name)
            except FieldDoesNotExist:
                field = None
            description = getattr(field, "verbose_name", name)
            if name in self.display_formats:
                columns[name] = shown_column(name, self.display_formats[name], description)
            elif isinstance(field, models.DateTimeField):
                columns[name] = shown_column(name, lambda obj, value: in_viewing_zone(value), description)
            else:
                columns[name] = name
        return columns[name]

    def show_formatted(self, holder: Any) -> None:
        """Swap the read-only fields of an AdminForm or InlineAdminFormSet for their formatted
        columns, in its fieldsets and its read-only list alike (they are matched by identity)."""
        columns = {name: self.shown_as(name) for name in holder.readonly_fields if isinstance(name, str)}
        columns = {name: column for name, column in columns.items() if column is not name}
        if columns:
            holder.readonly_fields = _swap(holder.readonly_fields, columns)
            holder.fieldsets = [(title, {**options, "fields": _swap(options["fields"], columns)})
                                for title, options in holder.fieldsets]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(db_field, models.DateTimeField) and formfield is not None:
            # The widget reads and writes the active zone; say which one it is.
            zone = _("Time in %(zone)s.") % {"zone": timezone.get_current_timezone_name()}
            formfield.help_text = f"{formfield.help_text} {zone}".strip() if formfield.help_text else zone
        return formfield


class NetworkListField(forms.CharField):
    """IP addresses or CIDR networks, one per line, stored as a list of strings (the shape the
    API takes); every bad line is named in the error."""

    widget = forms.Textarea(attrs={"rows": 4, "cols": 40, "placeholder": "10.0.0.0/8\n2001:db8::/32"})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, (list, tuple)) else value

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            return [str(line).strip() for line in value if str(line).strip()]
        return [line.strip() for line in str(value or "").splitlines() if line.strip()]

    def validate(self, value: list[str]) -> None:
        if self.required and not value:
            raise ValidationError(self.error_messages["required"], code="required")
        problems = []
        for line in value:
            try:
                ipaddress.ip_network(line, strict=False)
            except ValueError:
                problems.append(ValidationError(_("%(value)s is not an IP address or a CIDR network."),
                                                code="invalid", params={"value": line}))
        if problems:
            raise ValidationError(problems)

    def has_changed(self, initial: Any, data: Any) -> bool:
        return self.to_python(initial or []) != self.to_python(data)


class OrganizationScopedAdmin(ShownFormatted, admin.ModelAdmin):
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

    def get_list_display(self, request: HttpRequest) -> Any:
        return [self.shown_as(name) for name in super().get_list_display(request)]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], add: bool = False,
                           change: bool = False, form_url: str = "", obj: Any = None) -> Any:
        self.show_formatted(context["adminform"])
        for inline in context.get("inline_admin_formsets", []):
            if isinstance(inline.opts, ShownFormatted):
                inline.opts.show_formatted(inline)
        if obj is not None and obj.pk is not None and not isinstance(obj, AuditLog):
            context.update(audit_trail_links(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

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


def audit_trail_links(request: HttpRequest, obj: Any) -> dict[str, str]:
    """Where an object's history is read: the portal's audit page (the organization's own, for
    its members) and, for platform superusers, the AuditLog admin filtered to the object. The
    target is named as portal.services.record_audit names it."""
    target = {"target_type": type(obj).__name__.lower(), "target_id": str(obj.pk)}
    links = {"audit_trail_url": f"{reverse('portal:audit')}?{urlencode(target)}"}
    if request.user.is_superuser:
        links["audit_admin_url"] = f"{reverse('admin:portal_auditlog_changelist')}?{urlencode(target)}"
    return links


class ReadOnlyInline(ShownFormatted, admin.TabularInline):
    """Rows of an object shown on its page, each a link to its own admin page (where writes go
    through the services); seen by whoever sees the object around them."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and (request.user.is_superuser or admin_organization(request) is not None)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields  # every column, non-editable ones (created_at) included


class FactsAdmin(OrganizationScopedAdmin):
    """Records of what happened (audit rows, usage events): readable, never added, changed or
    deleted by hand, superusers included."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
