"""API.md §1: in every dialect, an explicit JSON null for an optional field, at any depth, means
the field was not given (its default applies, or nothing changes); a field that takes null keeps
it, and a required field's null is still refused by name. parse_body does it once for every JSON
body, and the schema says so."""

from decimal import Decimal

import pytest
from django.http import QueryDict
from rest_framework import serializers

from billing.models import Budget
from keys.models import InferenceKey
from portal.api.ram_views import PolicyCreate
from portal.api.views import without_unset_nulls
from tests import factories
from tests.api_helpers import client_for

KEYS = "/api/v1/gateway/keys"
BUDGETS = "/api/v1/billing/budgets"


class Limits(serializers.Serializer):
    rpm = serializers.IntegerField(required=False, default=60)
    note = serializers.CharField(required=False, allow_null=True, default="none")


class Spec(serializers.Serializer):
    name = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    limits = Limits(required=False)
    history = Limits(many=True, required=False)
    extra = serializers.JSONField(required=False)


def test_unset_nulls_are_dropped_at_every_depth_and_only_there():
    given = {"name": None, "tags": None, "limits": {"rpm": None, "note": None},
             "history": [{"rpm": None, "note": None}, None], "extra": {"kept": None}, "unknown": None}
    assert without_unset_nulls(Spec(), given) == {
        "name": None,  # required: its null is refused by name
        "limits": {"note": None},  # allow_null: null means null
        "history": [{"note": None}, None],  # a list item is a value, not an optional field
        "extra": {"kept": None},  # free-form JSON is the caller's own
        "unknown": None}  # left for the serializer to judge
    assert given["tags"] is None, "the request's own data is not changed"
    serializer = Spec(data=without_unset_nulls(Spec(), {"name": "x", "tags": None, "limits": {"rpm": None}}))
    assert serializer.is_valid(), serializer.errors
    assert serializer.validated_data == {"name": "x", "tags": [], "limits": {"rpm": 60, "note": "none"}}


def test_form_encoded_bodies_are_left_as_they_are():
    form = QueryDict("name=x&tags=a")
    assert without_unset_nulls(Spec(), form) is form


def test_a_policy_documents_own_nulls_are_its_own():
    body = {"name": "p", "description": None, "document": {"Version": "1", "Statement": None}}
    assert without_unset_nulls(PolicyCreate(), body) == {"name": "p", "document": {"Version": "1", "Statement": None}}


def test_a_key_created_with_nulls_takes_the_defaults(ram_world):
    factories.make_model("qwen-plus")
    response = client_for(ram_world.alice).post(KEYS, {
        "name": "app", "team_id": str(ram_world.research.uuid), "models_allowed": None, "allowed_ips": None,
        "is_sandbox": None, "rpm_limit": None, "tpm_limit": None, "expires_at": None}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["models_allowed"], body["allowed_ips"], body["is_sandbox"], body["rpm_limit"]) == ([], [], False, None)


def test_a_key_updated_with_nulls_keeps_what_was_not_given(ram_world):
    factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(ram_world.research, name="kept", models_allowed=["qwen-plus"],
                                          rpm_limit=30)
    response = client_for(ram_world.alice).put(f"{KEYS}/{key.uuid}", {
        "name": None, "models_allowed": None, "allowed_ips": None, "tpm_limit": 500}, format="json")
    assert response.status_code == 200, response.content
    key.refresh_from_db()
    assert (key.name, key.models_allowed, key.rpm_limit, key.tpm_limit) == ("kept", ["qwen-plus"], 30, 500)


def test_a_budget_with_nulls_takes_the_defaults_and_a_null_amount_is_refused(world):
    alice = client_for(world.alice)
    created = alice.post(BUDGETS, {"scope": "organization", "target_id": None, "amount": "10", "thresholds": None,
                                   "hard_limit": None}, format="json")
    assert created.status_code == 201, created.content
    assert (created.json()["thresholds"], created.json()["hard_limit"]) == ([50, 80, 100], False)
    budget_id = created.json()["id"]
    updated = alice.put(f"{BUDGETS}/{budget_id}", {"amount": None, "thresholds": None, "hard_limit": True},
                        format="json")
    assert updated.status_code == 200, updated.content
    assert (updated.json()["amount"], updated.json()["hard_limit"]) == ("10.00", True)
    refused = alice.post(BUDGETS, {"scope": "organization", "amount": None}, format="json")
    assert refused.status_code == 422
    assert [problem["loc"] for problem in refused.json()["detail"]] == [["body", "amount"]]
    assert Budget.objects.get().amount == Decimal("10")


@pytest.mark.parametrize("component, nullable, not_nullable", [
    ("KeyCreateRequestRequest", {"models_allowed", "allowed_ips", "is_sandbox", "expires_at"}, {"name", "team_id"}),
    ("BudgetUpdateRequest", {"amount", "thresholds", "hard_limit"}, set()),
    # Ingestion reads its body with its own checks, where a count's null is refused.
    ("UsageEventInRequest", set(), {"prompt_tokens", "cached_tokens", "cache_creation_tokens", "latency_ms"}),
], ids=["keys-create", "budgets-update", "ingestion"])
def test_the_schema_says_which_nulls_mean_not_given(openapi_schema, component, nullable, not_nullable):
    properties = openapi_schema["components"]["schemas"][component]["properties"]
    for name in nullable:
        assert properties[name].get("nullable") is True, name
    for name in not_nullable:
        assert not properties[name].get("nullable"), name


def test_nothing_is_stored_when_a_required_field_is_null(ram_world):
    before = InferenceKey.objects.count()
    response = client_for(ram_world.alice).post(KEYS, {"name": None, "team_id": str(ram_world.research.uuid)},
                                                format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    assert InferenceKey.objects.count() == before
