"""AIone key API shapes (seed 000): KeyCreateRequest, KeyUpdateRequest, KeyResponse, KeyRotateResponse.

A list field's bad entries are reported against the field itself (`loc` `["body", "allowed_ips"]`),
one message per entry naming it: the 422 schema allows only strings in `loc`.

Messages are marked for translation: the portal's key pages judge their forms with these same
serializers and show them in the reader's language; the API itself always answers in English
(portal.middleware)."""

import ipaddress
from datetime import timedelta

from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from billing.models import Model
from keys.models import InferenceKey, KeyStatus
from keys.services import ROTATE_GRACE_DEFAULT, ROTATE_GRACE_MAX_HOURS
from portal.api.fields import InstantField, PageField, StrictBooleanField, StrictCharField


def validate_ips(values: list[str]) -> list[str]:
    problems = []
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            problems.append(_("%(value)r is not an IP address or CIDR") % {"value": value})
    if problems:
        raise serializers.ValidationError(problems)
    return values


def validate_model_codes(values: list[str]) -> list[str]:
    """Every code names a model in the catalog that is enabled: a typo would otherwise be stored
    and only show up as the gateway refusing every call."""
    if not values:
        return values
    enabled_by_code = dict(Model.objects.filter(code__in=set(values)).values_list("code", "enabled"))
    problems = []
    for value in values:
        if value not in enabled_by_code:
            problems.append(ErrorDetail(_("%(value)r is not a model in the catalog") % {"value": value},
                                        code="value_error.not_found"))
        elif not enabled_by_code[value]:
            problems.append(ErrorDetail(_("%(value)r is disabled in the catalog") % {"value": value},
                                        code="value_error.disabled"))
    if problems:
        raise serializers.ValidationError(problems)
    return values


class EntryListField(serializers.ListField):
    """A ListField whose entries' errors are reported against the list itself, each message saying
    which entry: DRF would key them by index, and an integer in `loc` breaks the 422 schema."""

    def run_child_validation(self, data):
        try:
            return super().run_child_validation(data)
        except serializers.ValidationError as error:
            raise serializers.ValidationError([
                ErrorDetail(_("entry %(index)s: %(message)s") % {"index": index, "message": message},
                            code=getattr(message, "code", None) or "invalid")
                for index, messages in error.detail.items() for message in messages
            ]) from error


# The columns' own range (PositiveIntegerField: 32 bits on every backend); above it PostgreSQL
# refused the UPDATE, a 500 found by tests/fuzz.
LIMIT_MAX = 2**31 - 1
MODELS_ALLOWED_HELP = "Model codes the key may call, each an enabled model of the catalog (`GET /api/v1/models`)."
ALLOWED_IPS_HELP = ("IPv4 or IPv6 addresses or CIDR networks the key may be used from, e.g. `10.0.0.0/8`, "
                    "`2001:db8::/32`, `192.0.2.7`.")


class KeyCreateRequest(serializers.Serializer):
    name = StrictCharField(max_length=200)
    team_id = serializers.UUIDField(required=True, help_text="The uuid of the team (department) that owns the key.")
    models_allowed = EntryListField(child=StrictCharField(max_length=100), required=False, default=list,
                                   validators=[validate_model_codes], help_text=MODELS_ALLOWED_HELP)
    rpm_limit = serializers.IntegerField(min_value=1, max_value=LIMIT_MAX, required=False, allow_null=True,
                                         default=None)
    tpm_limit = serializers.IntegerField(min_value=1, max_value=LIMIT_MAX, required=False, allow_null=True,
                                         default=None)
    is_sandbox = StrictBooleanField(required=False, default=False)
    allowed_ips = EntryListField(child=StrictCharField(max_length=64), required=False, default=list,
                                 validators=[validate_ips], help_text=ALLOWED_IPS_HELP)
    expires_at = InstantField(required=False, allow_null=True, default=None)

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError(_("must be in the future"))
        return value


class KeyUpdateRequest(serializers.Serializer):
    name = StrictCharField(max_length=200, required=False)
    models_allowed = EntryListField(child=StrictCharField(max_length=100), required=False,
                                   validators=[validate_model_codes], help_text=MODELS_ALLOWED_HELP)
    allowed_ips = EntryListField(child=StrictCharField(max_length=64), required=False,
                                 validators=[validate_ips], help_text=ALLOWED_IPS_HELP)
    rpm_limit = serializers.IntegerField(min_value=1, max_value=LIMIT_MAX, required=False, allow_null=True)
    tpm_limit = serializers.IntegerField(min_value=1, max_value=LIMIT_MAX, required=False, allow_null=True)


class KeyListQuery(serializers.Serializer):
    team_id = serializers.UUIDField(required=False)
    status = serializers.ChoiceField(choices=KeyStatus.values, required=False)
    page = PageField(required=False, default=1)
    page_size = serializers.IntegerField(min_value=1, max_value=100, required=False, default=20)


class KeyResponse(serializers.ModelSerializer):
    id = serializers.UUIDField(source="uuid")
    org_id = serializers.UUIDField(source="organization.uuid")
    team_id = serializers.UUIDField(source="department.uuid")
    status = serializers.ChoiceField(source="effective_status", choices=KeyStatus.choices, read_only=True)

    class Meta:
        model = InferenceKey
        fields = ["id", "org_id", "team_id", "name", "key_prefix", "models_allowed", "rpm_limit", "tpm_limit",
                  "is_sandbox", "allowed_ips", "expires_at", "rotate_grace_until", "status", "created_at",
                  "last_used_at"]


class KeyCreateResponse(KeyResponse):
    key = serializers.CharField(help_text="The secret, shown this once.")

    class Meta(KeyResponse.Meta):
        fields = [*KeyResponse.Meta.fields, "key"]


class RotateQuery(serializers.Serializer):
    grace_hours = serializers.IntegerField(
        min_value=0, max_value=ROTATE_GRACE_MAX_HOURS, required=False,
        default=ROTATE_GRACE_DEFAULT // timedelta(hours=1),
        help_text="Hours the old secret keeps working; 0 retires it at once.")


class VerifyRequest(serializers.Serializer):
    key = StrictCharField(max_length=256)
