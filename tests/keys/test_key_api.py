"""The AIone key API: lifecycle, shapes, errors, and who may do what."""

from datetime import timedelta

import pytest
from django.utils import timezone

from keys.hashing import hash_secret
from keys.models import InferenceKey
from portal.models import AuditLog
from tests import factories
from tests.api_helpers import client_for

KEYS = "/api/v1/gateway/keys"


@pytest.fixture
def alice(ram_world):
    return client_for(ram_world.alice)


def _create(client, team, **fields):
    return client.post(KEYS, {"name": "app", "team_id": str(team.uuid), **fields}, format="json")


def test_creating_a_key_shows_its_secret_once(ram_world, alice):
    factories.make_model("qwen-plus")
    response = _create(alice, ram_world.research, rpm_limit=60, models_allowed=["qwen-plus"],
                       allowed_ips=["10.0.0.0/8"])
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["key"].startswith("sk-") and len(body["key"]) >= 43
    assert body["team_id"] == str(ram_world.research.uuid) and body["org_id"] == str(ram_world.acme.uuid)
    assert set(body) == {"id", "org_id", "team_id", "name", "key_prefix", "models_allowed", "rpm_limit", "tpm_limit",
                         "is_sandbox", "allowed_ips", "expires_at", "rotate_grace_until", "status", "created_at",
                         "last_used_at", "key"}
    stored = InferenceKey.objects.get(uuid=body["id"])
    assert stored.secret_hash == hash_secret(body["key"]) and body["key"] not in str(stored.__dict__)
    again = alice.get(f"{KEYS}/{body['id']}").json()
    assert "key" not in again and body["key"] not in str(again)
    listed = alice.get(KEYS).json()
    assert body["key"] not in str(listed)


@pytest.mark.parametrize(
    "fields, location",
    [
        ({"rpm_limit": 0}, ["body", "rpm_limit"]),
        ({"tpm_limit": -5}, ["body", "tpm_limit"]),
        ({"tpm_limit": 2**31}, ["body", "tpm_limit"]),
        ({"allowed_ips": ["not-an-ip"]}, ["body", "allowed_ips"]),
        ({"expires_at": "2001-01-01T00:00:00Z"}, ["body", "expires_at"]),
        ({"team_id": "nope"}, ["body", "team_id"]),
        ({"team_id": "00000000-0000-0000-0000-000000000000"}, ["body", "team_id"]),
    ],
    ids=["rpm-zero", "tpm-negative", "tpm-past-the-column", "bad-ip", "expiry-in-past", "team-not-uuid",
         "unknown-team"],
)
def test_bad_key_requests_get_422_naming_the_field_and_store_nothing(ram_world, alice, fields, location):
    before = InferenceKey.objects.count()
    response = _create(alice, ram_world.research, **fields)
    assert response.status_code == 422
    assert [item["loc"] for item in response.json()["detail"]] == [location]
    assert InferenceKey.objects.count() == before


def test_another_organizations_team_is_unknown(ram_world, alice):
    response = _create(alice, ram_world.sales)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "team_id"]


def test_list_filters_and_pages(ram_world, alice):
    for _ in range(3):
        factories.make_inference_key(ram_world.research)
    support_key, _ = factories.make_inference_key(ram_world.support)
    factories.make_inference_key(ram_world.sales)  # Globex: never listed
    body = alice.get(KEYS, {"page_size": 2}).json()
    assert body["total"] == 4 and len(body["items"]) == 2
    second = alice.get(KEYS, {"page_size": 2, "page": 2}).json()
    assert {i["id"] for i in body["items"]}.isdisjoint({i["id"] for i in second["items"]})
    only_support = alice.get(KEYS, {"team_id": str(ram_world.support.uuid)}).json()
    assert [i["id"] for i in only_support["items"]] == [str(support_key.uuid)]
    assert alice.get(KEYS, {"page_size": 0}).status_code == 422
    assert alice.get(KEYS, {"status": "sleeping"}).json()["detail"][0]["loc"] == ["query", "status"]


def test_update_changes_only_the_named_fields(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research, rpm_limit=10)
    response = alice.put(f"{KEYS}/{key.uuid}", {"name": "renamed", "tpm_limit": 5000}, format="json")
    assert response.status_code == 200
    key.refresh_from_db()
    assert (key.name, key.tpm_limit, key.rpm_limit) == ("renamed", 5000, 10)
    assert alice.put(f"{KEYS}/{key.uuid}", {"rpm_limit": 0}, format="json").status_code == 422
    # Past the column's 32 bits: PostgreSQL refused the UPDATE, a 500 (tests/fuzz).
    too_many = alice.put(f"{KEYS}/{key.uuid}", {"tpm_limit": 1071335570920642816}, format="json")
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "tpm_limit"]
    key.refresh_from_db()
    assert (key.rpm_limit, key.tpm_limit) == (10, 5000)


def test_disable_enable_and_delete(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research)
    assert alice.put(f"{KEYS}/{key.uuid}/disable").json()["status"] == "disabled"
    assert alice.put(f"{KEYS}/{key.uuid}/enable").json()["status"] == "active"
    assert alice.delete(f"{KEYS}/{key.uuid}").status_code == 204
    assert alice.get(f"{KEYS}/{key.uuid}").status_code == 404
    key.refresh_from_db()
    assert key.status == "revoked" and key.deleted_at is not None  # the row (and its usage) stays
    actions = set(AuditLog.objects.filter(target_id=str(key.pk)).values_list("action", flat=True))
    assert {"inference_key.disable", "inference_key.enable", "inference_key.delete"} <= actions


def test_rotation_returns_a_new_secret_and_a_grace_period(ram_world, alice):
    key, old_secret = factories.make_inference_key(ram_world.research)
    response = alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours=2")
    body = response.json()
    assert response.status_code == 200 and set(body) == {"id", "key", "key_prefix", "old_key_prefix",
                                                         "rotate_grace_until"}
    assert body["key"] != old_secret and body["old_key_prefix"] == old_secret[:11]
    key.refresh_from_db()
    assert timedelta(hours=1, minutes=59) < key.rotate_grace_until - timezone.now() <= timedelta(hours=2)
    assert alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours=169").status_code == 422


def test_an_expired_key_reports_expired(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research)
    InferenceKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert alice.get(f"{KEYS}/{key.uuid}").json()["status"] == "expired"


def test_dora_sees_and_manages_only_research_keys(ram_world):
    research_key, _ = factories.make_inference_key(ram_world.research)
    support_key, _ = factories.make_inference_key(ram_world.support)
    dora = client_for(ram_world.dora)
    assert [i["id"] for i in dora.get(KEYS).json()["items"]] == [str(research_key.uuid)]
    assert dora.get(f"{KEYS}/{research_key.uuid}").status_code == 200
    denied = dora.get(f"{KEYS}/{support_key.uuid}")
    assert denied.status_code == 403
    assert denied.json()["action"] == "keys:GetKey"
    assert denied.json()["resource"] == f"acs:keys:*:{ram_world.acme.pk}:apikey/{support_key.pk}"
    assert _create(dora, ram_world.research).status_code == 201
    assert _create(dora, ram_world.support).status_code == 403
    assert dora.put(f"{KEYS}/{support_key.uuid}/disable").status_code == 403
    support_key.refresh_from_db()
    assert support_key.status == "active"


def test_bob_with_usage_read_only_cannot_touch_keys(ram_world):
    key, _ = factories.make_inference_key(ram_world.research)
    bob = client_for(ram_world.bob)
    assert bob.get(KEYS).status_code == 403
    response = _create(bob, ram_world.research)
    assert response.status_code == 403 and response.json()["action"] == "keys:CreateKey"
    assert bob.delete(f"{KEYS}/{key.uuid}").status_code == 403
    assert InferenceKey.objects.filter(pk=key.pk, deleted_at__isnull=True).exists()


def test_a_scoped_management_key_is_narrowed_by_its_scopes(ram_world):
    factories.make_inference_key(ram_world.research)
    usage_only = client_for(ram_world.alice, scopes=["usage:read"])
    assert usage_only.get(KEYS).status_code == 403  # alice may, her key may not
    keys_read = client_for(ram_world.alice, scopes=["keys:read"])
    assert keys_read.get(KEYS).status_code == 200
    assert _create(keys_read, ram_world.research).status_code == 403


def test_an_inference_key_is_refused_on_management_endpoints(ram_world):
    from rest_framework.test import APIClient

    _, secret = factories.make_inference_key(ram_world.research)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.get(KEYS)
    assert response.status_code == 401 and "gateway" in response.json()["detail"]


def test_http_basic_with_the_management_key_as_password(ram_world):
    import base64

    from rest_framework.test import APIClient

    from keys import services
    from portal.services import SYSTEM

    secret = services.create_management_key(actor=SYSTEM, member=ram_world.alice, name="basic").secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"anyone:{secret}".encode()).decode())
    assert client.get(KEYS).status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"anyone:sk_mg_wrong").decode())
    assert client.get(KEYS).status_code == 401


def test_revoked_or_expired_management_keys_stop_working(ram_world):
    from rest_framework.test import APIClient

    from keys import services
    from keys.models import ManagementKey
    from portal.services import SYSTEM

    issued = services.create_management_key(actor=SYSTEM, member=ram_world.alice, name="short")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    assert client.get(KEYS).status_code == 200
    ManagementKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(KEYS).status_code == 401
    ManagementKey.objects.filter(pk=issued.key.pk).update(expires_at=None)
    services.revoke_management_key(actor=SYSTEM, key=issued.key)
    assert client.get(KEYS).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(ram_world, django_assert_max_num_queries):
    from rest_framework.test import APIClient

    from keys import services
    from keys.models import ManagementKey
    from portal.services import SYSTEM

    issued = services.create_management_key(actor=SYSTEM, member=ram_world.alice, name="touch")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    client.get("/api/v1/ram/actions")
    first = ManagementKey.objects.get(pk=issued.key.pk).last_used_at
    assert first is not None
    client.get("/api/v1/ram/actions")
    assert ManagementKey.objects.get(pk=issued.key.pk).last_used_at == first
