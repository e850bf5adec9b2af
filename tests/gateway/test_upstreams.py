"""Operators configure the gateway's upstreams with the platform's service token (API.md §12);
the provider's key is stored encrypted and never shown again, in the API or the admin."""

import pytest
from cryptography.fernet import Fernet
from rest_framework.test import APIClient

from keys import services
from keys.encryption import UPSTREAM_KEYS, key_ring
from keys.models import Upstream
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for

PROVIDER_KEY = "sk-provider-0123456789abcdefSECRET"


@pytest.fixture
def operator(db) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {services.create_service_token(actor=SYSTEM, name='ops').secret}")
    return client


@pytest.fixture
def catalog(db):
    return factories.make_model("gpt-test"), factories.make_model("gpt-other")


def _create(operator, **overrides):
    body = {"name": "primary", "base_url": "https://provider.example/v1", "api_key": PROVIDER_KEY,
            "models": ["gpt-test"], "timeout_seconds": 30, "max_retries": 1, **overrides}
    return operator.post("/api/v1/gateway/upstreams", body, format="json")


def test_an_operator_adds_lists_and_removes_an_upstream(operator, catalog):
    created = _create(operator)
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "name", "base_url", "models", "timeout_seconds", "max_retries"}
    assert body["models"] == ["gpt-test"] and body["timeout_seconds"] == 30 and body["max_retries"] == 1

    listed = operator.get("/api/v1/gateway/upstreams").json()
    assert listed["total"] == 1 and listed["items"][0] == body

    assert operator.delete(f"/api/v1/gateway/upstreams/{body['id']}").status_code == 204
    assert operator.get("/api/v1/gateway/upstreams").json() == {"items": [], "total": 0}
    assert operator.delete(f"/api/v1/gateway/upstreams/{body['id']}").status_code == 404


def test_the_provider_key_is_encrypted_at_rest_and_never_answered(operator, catalog):
    created = _create(operator)
    assert PROVIDER_KEY not in created.content.decode()
    assert PROVIDER_KEY not in operator.get("/api/v1/gateway/upstreams").content.decode()
    stored = Upstream.objects.get()
    assert PROVIDER_KEY not in stored.api_key_encrypted
    assert key_ring(UPSTREAM_KEYS).decrypt(stored.api_key_encrypted.encode()).decode() == PROVIDER_KEY


def test_a_configured_key_ring_rotates(operator, catalog, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old]
    _create(operator)
    settings.FIELD_ENCRYPTION_KEY = [new, old]  # the new key first: the old one still decrypts
    stored = Upstream.objects.get()
    rotated = key_ring(UPSTREAM_KEYS).rotate(stored.api_key_encrypted.encode())
    settings.FIELD_ENCRYPTION_KEY = [new]
    assert key_ring(UPSTREAM_KEYS).decrypt(rotated).decode() == PROVIDER_KEY


@pytest.mark.parametrize(("overrides", "field"), [
    pytest.param({"models": ["no-such-model"]}, "models", id="unknown-model"),
    pytest.param({"models": []}, "models", id="no-models"),
    pytest.param({"base_url": "not a url"}, "base_url", id="bad-url"),
    pytest.param({"api_key": ""}, "api_key", id="no-key"),
    pytest.param({"timeout_seconds": 0}, "timeout_seconds", id="zero-timeout"),
    pytest.param({"max_retries": -1}, "max_retries", id="negative-retries"),
])
def test_bad_input_is_a_422_naming_the_field_and_stores_nothing(operator, catalog, overrides, field):
    answer = _create(operator, **overrides)
    assert answer.status_code == 422
    assert any(problem["loc"] == ["body", field] for problem in answer.json()["detail"])
    assert not Upstream.objects.exists()


def test_a_model_is_served_by_one_upstream(operator, catalog):
    assert _create(operator).status_code == 201
    again = _create(operator, name="secondary", models=["gpt-other", "gpt-test"])
    assert again.status_code == 422 and again.json()["detail"][0]["loc"] == ["body", "models"]
    assert Upstream.objects.count() == 1


def test_members_and_inference_keys_may_not_touch_upstreams(world, catalog):
    owner = client_for(world.alice)
    assert owner.get("/api/v1/gateway/upstreams").status_code == 403
    assert owner.post("/api/v1/gateway/upstreams", {}, format="json").status_code == 403
    _key, secret = factories.make_inference_key(world.research)
    anonymous_key = APIClient()
    anonymous_key.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert anonymous_key.get("/api/v1/gateway/upstreams").status_code == 401


def test_the_admin_keeps_the_key_write_only(admin_client, catalog):
    answer = admin_client.post("/admin/keys/upstream/add/", {
        "name": "primary", "base_url": "https://provider.example/v1", "api_key": PROVIDER_KEY,
        "model_codes": ["gpt-test"], "timeout_seconds": 30, "max_retries": 1})
    assert answer.status_code == 302, answer.content.decode()[:2000]
    upstream = Upstream.objects.get()
    page = admin_client.get(f"/admin/keys/upstream/{upstream.pk}/change/").content.decode()
    assert PROVIDER_KEY not in page and upstream.api_key_encrypted not in page
    # Saving the form without a key keeps the stored one.
    admin_client.post(f"/admin/keys/upstream/{upstream.pk}/change/", {
        "name": "primary", "base_url": "https://provider.example/v1", "api_key": "",
        "model_codes": ["gpt-test"], "timeout_seconds": 45, "max_retries": 1})
    upstream.refresh_from_db()
    assert upstream.timeout_seconds == 45
    assert key_ring(UPSTREAM_KEYS).decrypt(upstream.api_key_encrypted.encode()).decode() == PROVIDER_KEY


def test_upstreams_are_reached_through_the_environments_proxy_unless_no_proxy_names_them(monkeypatch):
    from portal.gateway.upstream import _proxy_for

    monkeypatch.setenv("HTTPS_PROXY", "http://egress:secret@proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "models.internal")
    _proxy_for.cache_clear()
    try:
        proxy, auth = _proxy_for("https://api.provider.example/v1")
        assert proxy == "http://proxy.internal:3128" and (auth.login, auth.password) == ("egress", "secret")
        assert _proxy_for("https://models.internal/v1") == (None, None)
        assert _proxy_for("http://127.0.0.1:9100/v1") == (None, None)  # no HTTP_PROXY set
    finally:
        _proxy_for.cache_clear()
