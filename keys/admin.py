"""Credentials in the admin. Inference keys are issued, changed, rotated, disabled, enabled and
deleted through keys.services, as the API does it (audited, verify caches dropped), and a new
or rotated secret is shown once, on the page that answers the save; it is never stored."""

from typing import Any

from django import forms
from django.contrib import admin
from django.core.validators import MinValueValidator
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from keys import services
from keys.models import InferenceKey, KeyStatus, ManagementKey, ServiceToken, Upstream
from portal.admin import CatalogModelsField
from portal.admin_scoping import NetworkListField, OrganizationScopedAdmin, ShownFormatted, admin_actor

# Secrets are never stored, so no admin page can show one; the hashes are excluded as well.
SECRET_FIELDS = ["secret_hash", "previous_secret_hash"]

# What an existing key's form may change: the API's KeyUpdateRequest. Status changes are the
# actions (disable, enable, rotate); the department, sandbox flag and expiry are fixed at issue.
UPDATABLE = ["name", "models_allowed", "allowed_ips", "rpm_limit", "tpm_limit"]
ISSUED_WITH = ["name", "department", "models_allowed", "allowed_ips", "rpm_limit", "tpm_limit", "is_sandbox",
               "expires_at"]


class InferenceKeyForm(forms.ModelForm):
    models_allowed = CatalogModelsField(
        label=_("Models allowed"), help_text=_("None selected: the key may call every model its department may."))
    allowed_ips = NetworkListField(
        label=_("Allowed IPs"), required=False,
        help_text=_("One IPv4 or IPv6 address or CIDR network per line, e.g. 10.0.0.0/8. Empty: any address."))

    class Meta:
        model = InferenceKey
        fields = ISSUED_WITH

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "models_allowed" in self.fields:
            self.fields["models_allowed"].keep_stored(self.instance.models_allowed)
        for name in ("rpm_limit", "tpm_limit"):  # as the API: a limit is at least 1, or none
            if name in self.fields:
                self.fields[name].validators.append(MinValueValidator(1))

    def clean_expires_at(self) -> Any:
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError(_("The expiry must be in the future."))
        return value


def _secret_page(request: HttpRequest, model_admin: admin.ModelAdmin, issued: list[services.IssuedKey],
                 title: Any) -> HttpResponse:
    """The one page a new secret appears on: not cached by the browser or any proxy."""
    context = {**model_admin.admin_site.each_context(request), "title": title, "issued": issued,
               "opts": model_admin.model._meta}
    response = TemplateResponse(request, "admin/keys/inferencekey/secrets.html", context)
    add_never_cache_headers(response)
    return response


@admin.register(InferenceKey)
class InferenceKeyAdmin(OrganizationScopedAdmin):
    form = InferenceKeyForm
    list_display = ["name", "key_prefix", "organization", "department", "status", "created_at", "expires_at",
                    "last_used_at"]
    list_filter = ["organization", "status", "is_sandbox"]
    search_fields = ["name", "key_prefix", "uuid"]
    list_select_related = ["organization", "department"]
    exclude = SECRET_FIELDS
    readonly_fields = ["uuid", "key_prefix", "created_at", "last_used_at", "rotate_grace_until", "deleted_at"]
    actions = ["disable_keys", "enable_keys", "rotate_keys"]

    def get_fields(self, request: HttpRequest, obj: InferenceKey | None = None) -> list[str]:
        if obj is None:
            return ISSUED_WITH
        fixed = ["department", "owner", "status", "is_sandbox", "expires_at"]
        if request.user.is_superuser:
            fixed = ["organization", *fixed]
        return [*UPDATABLE, *fixed, *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: InferenceKey | None = None) -> list[str]:
        if obj is None:
            return []
        return [name for name in self.get_fields(request, obj) if name not in UPDATABLE]

    def has_change_permission(self, request: HttpRequest, obj: InferenceKey | None = None) -> bool:
        if obj is not None and obj.deleted_at is not None:
            return False  # a deleted key is history
        return super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: InferenceKey, form: Any, change: bool) -> None:
        data, actor = form.cleaned_data, admin_actor(request)
        if change:
            changes = {name: data[name] for name in UPDATABLE if name in form.changed_data}
            if changes:
                services.update_inference_key(actor=actor, key=obj, **changes)
            return
        issued = services.create_inference_key(
            actor=actor, department=data["department"], name=data["name"], models_allowed=data["models_allowed"],
            allowed_ips=data["allowed_ips"], rpm_limit=data["rpm_limit"], tpm_limit=data["tpm_limit"],
            is_sandbox=data["is_sandbox"], expires_at=data["expires_at"])
        obj.pk, obj.key_prefix, obj.organization = issued.key.pk, issued.key.key_prefix, issued.key.organization
        obj._state.adding = False
        obj.issued = issued  # read by response_add, once; never saved

    def response_add(self, request: HttpRequest, obj: InferenceKey, post_url_continue: str | None = None) -> Any:
        issued = getattr(obj, "issued", None)
        if issued is None:
            return super().response_add(request, obj, post_url_continue)
        return _secret_page(request, self, [issued], _("Your new key"))

    def delete_model(self, request: HttpRequest, obj: InferenceKey) -> None:
        # Soft, as the API deletes: the key stops working, its row (and its usage history) stays.
        services.delete_inference_key(actor=admin_actor(request), key=obj)

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> tuple[list[Any], dict, set, list]:
        # The delete is soft: nothing cascades and no usage event (PROTECT) stands in its way.
        keys = list(objs)
        return keys, {InferenceKey._meta.verbose_name_plural: len(keys)}, set(), []

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        actor = admin_actor(request)
        for key in queryset.filter(deleted_at__isnull=True):
            services.delete_inference_key(actor=actor, key=key)

    @admin.action(description=_("Disable the selected keys"), permissions=["change"])
    def disable_keys(self, request: HttpRequest, queryset: Any) -> None:
        actor = admin_actor(request)
        keys = list(queryset.filter(deleted_at__isnull=True, status=KeyStatus.ACTIVE))
        for key in keys:
            services.disable_inference_key(actor=actor, key=key)
        self.message_user(request, ngettext("%(count)d key disabled.", "%(count)d keys disabled.", len(keys))
                          % {"count": len(keys)})

    @admin.action(description=_("Enable the selected keys"), permissions=["change"])
    def enable_keys(self, request: HttpRequest, queryset: Any) -> None:
        actor = admin_actor(request)
        keys = list(queryset.filter(deleted_at__isnull=True, status=KeyStatus.DISABLED))
        for key in keys:
            services.enable_inference_key(actor=actor, key=key)
        self.message_user(request, ngettext("%(count)d key enabled.", "%(count)d keys enabled.", len(keys))
                          % {"count": len(keys)})

    @admin.action(description=_("Rotate the selected keys (the old secrets work for 24 hours)"),
                  permissions=["change"])
    def rotate_keys(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        actor = admin_actor(request)
        keys = queryset.filter(deleted_at__isnull=True, status=KeyStatus.ACTIVE).select_related("department")
        issued = [services.rotate_inference_key(actor=actor, key=key) for key in keys]
        if not issued:
            self.message_user(request, _("No active key was selected; nothing was rotated."), level="warning")
            return None
        return _secret_page(request, self, issued, _("Your rotated keys"))


@admin.register(ManagementKey)
class ManagementKeyAdmin(OrganizationScopedAdmin):
    organization_path = "member__organization"
    list_display = ["name", "key_prefix", "member", "status", "expires_at", "last_used_at"]
    list_filter = ["status"]
    search_fields = ["name", "key_prefix", "uuid", "member__user__username"]
    list_select_related = ["member__user"]
    exclude = SECRET_FIELDS
    readonly_fields = ["uuid", "key_prefix", "member", "created_at", "last_used_at"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False


@admin.register(ServiceToken)
class ServiceTokenAdmin(ShownFormatted, admin.ModelAdmin):
    """Platform credentials: superusers only (the default Django permissions apply)."""

    list_display = ["name", "key_prefix", "status", "created_at", "last_used_at"]
    exclude = SECRET_FIELDS
    readonly_fields = ["uuid", "key_prefix", "created_at", "last_used_at"]

    def get_list_display(self, request: HttpRequest) -> Any:
        return [self.shown_as(name) for name in super().get_list_display(request)]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class UpstreamForm(forms.ModelForm):
    """The provider key is write-only: typed in, encrypted, never rendered back (blank keeps it)."""

    api_key = forms.CharField(
        label=_("API key"), required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        help_text=_("The provider's key, stored encrypted and never shown again. Leave blank to keep the current one."))
    model_codes = CatalogModelsField(label=_("Models"), help_text=_("The catalog's models this upstream serves."))

    class Meta:
        model = Upstream
        fields = ["name", "base_url", "model_codes", "timeout_seconds", "max_retries"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model_codes"].keep_stored(self.instance.model_codes)
        if self.instance.pk is None:
            self.fields["api_key"].required = True

    def clean_model_codes(self) -> list[str]:
        codes = self.cleaned_data.get("model_codes") or []
        others = Upstream.objects.exclude(pk=self.instance.pk)
        taken = sorted({code for upstream in others for code in upstream.model_codes if code in codes})
        if taken:
            message = _("Already served by another upstream: %(codes)s")
            raise forms.ValidationError(message % {"codes": ", ".join(taken)})
        return codes


@admin.register(Upstream)
class UpstreamAdmin(ShownFormatted, admin.ModelAdmin):
    """The gateway's providers: superusers only (the default Django permissions apply)."""

    form = UpstreamForm
    list_display = ["name", "base_url", "model_codes", "timeout_seconds", "max_retries", "created_at"]
    readonly_fields = ["uuid", "created_at"]

    def save_model(self, request: HttpRequest, obj: Upstream, form: forms.ModelForm, change: bool) -> None:
        api_key = form.cleaned_data.get("api_key")
        if not change:
            created = services.create_upstream(
                actor=admin_actor(request), name=obj.name, base_url=obj.base_url, api_key=api_key,
                model_codes=obj.model_codes, timeout_seconds=obj.timeout_seconds, max_retries=obj.max_retries)
            obj.pk, obj.uuid, obj.api_key_encrypted = created.pk, created.uuid, created.api_key_encrypted
            return
        super().save_model(request, obj, form, change)
        if api_key:
            services.set_upstream_api_key(actor=admin_actor(request), upstream=obj, api_key=api_key)

    def delete_model(self, request: HttpRequest, obj: Upstream) -> None:
        services.delete_upstream(actor=admin_actor(request), upstream=obj)
