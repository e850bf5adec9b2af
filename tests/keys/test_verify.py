"""The gateway's hot path: verify answers from cache and forgets on every change."""

import time
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from keys import services
from keys.models import InferenceKey
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for

VERIFY = "/api/v1/gateway/keys/verify"


@pytest.fixture
def gateway(db):
    cache.clear()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {services.create_service_token(actor=SYSTEM, name='gw').secret}")
    return client


def _verify(gateway, secret):
    response = gateway.post(VERIFY, {"key": secret}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_live_key_verifies_with_everything_the_gateway_needs(ram_world, gateway):
    key, secret = factories.make_inference_key(ram_world.research, rpm_limit=60, tpm_limit=1000,
                                               models_allowed=["qwen-plus"], allowed_ips=["10.0.0.0/8"])
    assert _verify(gateway, secret) == {
        "valid": True, "key_id": str(key.uuid), "org_id": str(ram_world.acme.uuid),
        "team_id": str(ram_world.research.uuid), "status": "active", "models_allowed": ["qwen-plus"],
        "allowed_ips": ["10.0.0.0/8"], "rpm_limit": 60, "tpm_limit": 1000, "budget_exhausted": False,
    }


def test_an_unknown_key_is_simply_invalid(gateway):
    assert _verify(gateway, "sk-" + "x" * 48) == {"valid": False}


def test_the_second_verification_is_served_from_cache(ram_world, gateway, django_assert_max_num_queries):
    _, secret = factories.make_inference_key(ram_world.research)
    _verify(gateway, secret)
    with django_assert_max_num_queries(1):  # only the service token's lookup
        _verify(gateway, secret)


@pytest.mark.parametrize("change", ["disable", "delete", "rotate-without-grace"])
def test_a_change_stops_verification_at_once(ram_world, gateway, change):
    alice = client_for(ram_world.alice)
    key, secret = factories.make_inference_key(ram_world.research)
    assert _verify(gateway, secret)["valid"]  # now cached
    if change == "disable":
        alice.put(f"/api/v1/gateway/keys/{key.uuid}/disable")
    elif change == "delete":
        alice.delete(f"/api/v1/gateway/keys/{key.uuid}")
    else:
        alice.put(f"/api/v1/gateway/keys/{key.uuid}/rotate?grace_hours=0")
    assert _verify(gateway, secret) == {"valid": False}


def test_the_old_secret_works_during_the_grace_period_only(ram_world, gateway):
    alice = client_for(ram_world.alice)
    key, old = factories.make_inference_key(ram_world.research)
    new = alice.put(f"/api/v1/gateway/keys/{key.uuid}/rotate?grace_hours=1").json()["key"]
    assert _verify(gateway, old)["valid"] and _verify(gateway, new)["valid"]
    InferenceKey.objects.filter(pk=key.pk).update(rotate_grace_until=timezone.now() + timedelta(seconds=1))
    cache.clear()
    assert _verify(gateway, old)["valid"]  # cached for at most the second that is left
    time.sleep(1.1)
    assert _verify(gateway, old) == {"valid": False}
    assert _verify(gateway, new)["valid"]


def test_an_expired_key_does_not_verify(ram_world, gateway):
    _, secret = factories.make_inference_key(ram_world.research,
                                             expires_at=timezone.now() + timedelta(seconds=1))
    assert _verify(gateway, secret)["valid"]
    time.sleep(1.1)
    assert _verify(gateway, secret) == {"valid": False}


def test_re_enabling_a_key_verifies_again(ram_world, gateway):
    key, secret = factories.make_inference_key(ram_world.research)
    services.disable_inference_key(actor=SYSTEM, key=key)
    assert _verify(gateway, secret) == {"valid": False}
    services.enable_inference_key(actor=SYSTEM, key=key)
    assert _verify(gateway, secret)["valid"]


def test_budget_exhaustion_is_reported(ram_world, gateway):
    from decimal import Decimal

    from usage.services import ingest_events

    account = ram_world.acme.billing_account
    account.monthly_budget = Decimal("0.001")
    account.save()
    model = factories.make_model("qwen-plus")
    key, secret = factories.make_inference_key(ram_world.research)
    ingest_events([factories.event(key, model, timestamp=timezone.now().isoformat())])
    assert _verify(gateway, secret)["budget_exhausted"] is True


def test_only_the_service_token_may_verify(ram_world):
    _, secret = factories.make_inference_key(ram_world.research)
    response = client_for(ram_world.alice).post(VERIFY, {"key": secret}, format="json")
    assert response.status_code == 403
    anonymous = APIClient().post(VERIFY, {"key": secret}, format="json")
    assert anonymous.status_code == 401
    inference = APIClient()
    inference.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert inference.post(VERIFY, {"key": secret}, format="json").status_code == 401


def test_a_service_token_cannot_use_member_endpoints(gateway):
    assert gateway.get("/api/v1/gateway/keys").status_code == 403
