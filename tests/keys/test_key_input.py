"""What the key API accepts in `models_allowed`, `allowed_ips` and `grace_hours`: a bad entry is a
422 naming it, against the field (the 422 schema's `loc` holds strings only), and nothing is stored."""

import json

import jsonschema
import pytest

from keys.models import InferenceKey
from keys.services import ROTATE_GRACE_MAX_HOURS
from portal.models import AuditLog
from tests import factories
from tests.api_helpers import client_for

KEYS = "/api/v1/gateway/keys"


@pytest.fixture
def alice(ram_world):
    return client_for(ram_world.alice)


@pytest.fixture
def catalog(db):
    """qwen-plus is served; old-model is still in the catalog but disabled."""
    factories.make_model("qwen-plus")
    old = factories.make_model("old-model")
    old.enabled = False
    old.save(update_fields=["enabled"])


@pytest.fixture
def validation_error_schema(openapi_schema):
    """The documented 422 body of the key endpoints, as a JSON Schema validator."""
    response = openapi_schema["paths"][KEYS]["post"]["responses"]["422"]
    schema = response["content"]["application/json"]["schema"]
    document = json.loads(json.dumps({"components": openapi_schema["components"], **schema}))
    return jsonschema.Draft4Validator(document)


def _create(client, team, **fields):
    return client.post(KEYS, {"name": "app", "team_id": str(team.uuid), **fields}, format="json")


def _stored(key: InferenceKey) -> tuple:
    key.refresh_from_db()
    return key.name, key.models_allowed, key.allowed_ips, key.secret_hash, key.rotate_grace_until


def _problems(response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.content
    return [(item["loc"], item["msg"]) for item in response.json()["detail"]]


# --- models_allowed ------------------------------------------------------------------------------

@pytest.mark.parametrize("code, says", [("no-such-model", "not a model in the catalog"),
                                        ("old-model", "disabled in the catalog")], ids=["unknown", "disabled"])
def test_creating_a_key_for_a_model_not_served_is_refused_by_name(ram_world, alice, catalog, code, says):
    keys_before, audits_before = InferenceKey.objects.count(), AuditLog.objects.count()
    response = _create(alice, ram_world.research, models_allowed=["qwen-plus", code])
    assert _problems(response) == [(["body", "models_allowed"], f"'{code}' is {says}")]
    assert (InferenceKey.objects.count(), AuditLog.objects.count()) == (keys_before, audits_before)


@pytest.mark.parametrize("code", ["no-such-model", "old-model"], ids=["unknown", "disabled"])
def test_updating_a_key_to_a_model_not_served_changes_nothing(ram_world, alice, catalog, code):
    key, _ = factories.make_inference_key(ram_world.research, name="app", models_allowed=["qwen-plus"])
    before, audits_before = _stored(key), AuditLog.objects.count()
    response = alice.put(f"{KEYS}/{key.uuid}", {"name": "renamed", "models_allowed": [code]}, format="json")
    assert [loc for loc, _ in _problems(response)] == [["body", "models_allowed"]]
    assert code in response.json()["detail"][0]["msg"]
    assert _stored(key) == before and AuditLog.objects.count() == audits_before


def test_every_bad_model_code_is_named(ram_world, alice, catalog):
    response = _create(alice, ram_world.research, models_allowed=["typo-one", "qwen-plus", "typo-two"])
    assert _problems(response) == [(["body", "models_allowed"], "'typo-one' is not a model in the catalog"),
                                   (["body", "models_allowed"], "'typo-two' is not a model in the catalog")]
    assert [item["type"] for item in response.json()["detail"]] == ["value_error.not_found"] * 2


def test_served_models_are_accepted_on_create_and_update(ram_world, alice, catalog):
    factories.make_model("qwen-max")
    response = _create(alice, ram_world.research, models_allowed=["qwen-plus"])
    assert response.status_code == 201, response.json()
    assert response.json()["models_allowed"] == ["qwen-plus"]
    updated = alice.put(f"{KEYS}/{response.json()['id']}", {"models_allowed": ["qwen-plus", "qwen-max"]},
                        format="json")
    assert updated.status_code == 200, updated.json()
    assert InferenceKey.objects.get(uuid=response.json()["id"]).models_allowed == ["qwen-plus", "qwen-max"]


# --- allowed_ips ---------------------------------------------------------------------------------

BAD_IPS = ["not-an-ip", "10.0.0.0/33", "300.1.2.3", "2001:db8::/129", "10.0.0.1/8/8", "10.0.0.0/255.0.255.0"]


@pytest.mark.parametrize("entry", BAD_IPS, ids=BAD_IPS)
def test_creating_a_key_with_a_bad_ip_or_cidr_is_refused_by_name(ram_world, alice, entry):
    before = InferenceKey.objects.count()
    response = _create(alice, ram_world.research, allowed_ips=["10.0.0.0/8", entry])
    assert _problems(response) == [(["body", "allowed_ips"], f"'{entry}' is not an IP address or CIDR")]
    assert InferenceKey.objects.count() == before


def test_updating_a_key_with_bad_ips_names_each_and_changes_nothing(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research, name="app", allowed_ips=["10.0.0.0/8"])
    before = _stored(key)
    response = alice.put(f"{KEYS}/{key.uuid}", {"name": "renamed", "allowed_ips": ["nope", "192.0.2.7", "::g"]},
                         format="json")
    assert _problems(response) == [(["body", "allowed_ips"], "'nope' is not an IP address or CIDR"),
                                   (["body", "allowed_ips"], "'::g' is not an IP address or CIDR")]
    assert _stored(key) == before


GOOD_IPS = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "2001:db8::1", "10.1.2.3/8"]


def test_ip_addresses_and_cidr_networks_of_both_families_are_accepted(ram_world, alice):
    response = _create(alice, ram_world.research, allowed_ips=GOOD_IPS)
    assert response.status_code == 201, response.json()
    key = InferenceKey.objects.get(uuid=response.json()["id"])
    assert key.allowed_ips == GOOD_IPS  # stored as given: host bits of a network are not an error
    updated = alice.put(f"{KEYS}/{key.uuid}", {"allowed_ips": ["2001:db8::/32", "192.0.2.7"]}, format="json")
    assert updated.status_code == 200, updated.json()
    key.refresh_from_db()
    assert key.allowed_ips == ["2001:db8::/32", "192.0.2.7"]


# --- an entry the list's own field refuses -------------------------------------------------------

@pytest.mark.parametrize(
    "field, entry, says",
    [
        ("models_allowed", "", "This field may not be blank."),
        ("models_allowed", None, "This field may not be null."),
        ("models_allowed", "m" * 101, "Ensure this field has no more than 100 characters."),
        ("allowed_ips", None, "This field may not be null."),
        ("allowed_ips", "1" * 65, "Ensure this field has no more than 64 characters."),
    ],
    ids=["blank-model", "null-model", "long-model", "null-ip", "long-ip"],
)
def test_a_malformed_entry_is_named_by_position_with_a_string_only_loc(
    ram_world, alice, catalog, validation_error_schema, field, entry, says
):
    before = InferenceKey.objects.count()
    response = _create(alice, ram_world.research, **{field: ["qwen-plus" if field == "models_allowed" else
                                                             "10.0.0.0/8", entry]})
    assert _problems(response) == [(["body", field], f"entry 1: {says}")]
    validation_error_schema.validate(response.json())
    assert InferenceKey.objects.count() == before


# --- rotation ------------------------------------------------------------------------------------

def test_a_grace_period_above_the_maximum_is_refused_and_the_secret_kept(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research)
    before = _stored(key)
    response = alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours={ROTATE_GRACE_MAX_HOURS + 1}")
    assert [loc[-1] for loc, _ in _problems(response)] == ["grace_hours"]
    assert _stored(key) == before
    assert alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours={ROTATE_GRACE_MAX_HOURS}").status_code == 200


def test_a_caller_who_may_not_create_keys_is_refused_before_the_body_is_judged(ram_world, catalog):
    # bob reads usage only: a 403, not a 422 that would tell him which model codes exist.
    response = _create(client_for(ram_world.bob), ram_world.research, models_allowed=["no-such-model"])
    assert response.status_code == 403 and response.json()["action"] == "keys:CreateKey"
    assert not InferenceKey.objects.exists()


def test_a_bad_grace_period_is_located_in_the_query(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research)
    response = alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours={ROTATE_GRACE_MAX_HOURS + 1}")
    assert [loc for loc, _ in _problems(response)] == [["query", "grace_hours"]]


# --- the schema ----------------------------------------------------------------------------------

def _request_schema(openapi_schema, path: str, method: str) -> dict:
    reference = openapi_schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return openapi_schema["components"]["schemas"][reference.rsplit("/", 1)[-1]]


def test_the_schema_documents_team_id_as_required_on_create(openapi_schema):
    create = _request_schema(openapi_schema, KEYS, "post")
    assert "team_id" in create["required"]
    assert create["properties"]["team_id"]["description"]
    assert "catalog" in create["properties"]["models_allowed"]["description"]
    assert "CIDR" in create["properties"]["allowed_ips"]["description"]


def test_the_schema_documents_the_grace_maximum(openapi_schema):
    parameters = openapi_schema["paths"][f"{KEYS}/{{key_id}}/rotate"]["put"]["parameters"]
    grace = next(parameter for parameter in parameters if parameter["name"] == "grace_hours")
    assert (grace["schema"]["minimum"], grace["schema"]["maximum"], grace["schema"]["default"]) == (
        0, ROTATE_GRACE_MAX_HOURS, 24)
