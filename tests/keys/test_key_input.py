"""What the key API accepts in `models_allowed`, `allowed_ips` and `grace_hours`: a bad entry is a
422 naming it, against the field (the 422 schema's `loc` holds strings only), and nothing is stored."""

import pytest

from keys.models import InferenceKey
from keys.services import ROTATE_GRACE_MAX_HOURS
from tests import factories
from tests.api_helpers import client_for

KEYS = "/api/v1/gateway/keys"


@pytest.fixture
def alice(ram_world):
    return client_for(ram_world.alice)


def _create(client, team, **fields):
    return client.post(KEYS, {"name": "app", "team_id": str(team.uuid), **fields}, format="json")


def _stored(key: InferenceKey) -> tuple:
    key.refresh_from_db()
    return key.name, key.models_allowed, key.allowed_ips, key.secret_hash, key.rotate_grace_until


def _problems(response) -> list[tuple[list, str]]:
    assert response.status_code == 422, response.content
    return [(item["loc"], item["msg"]) for item in response.json()["detail"]]


# --- rotation ------------------------------------------------------------------------------------

def test_a_grace_period_above_the_maximum_is_refused_and_the_secret_kept(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research)
    before = _stored(key)
    response = alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours={ROTATE_GRACE_MAX_HOURS + 1}")
    assert [loc[-1] for loc, _ in _problems(response)] == ["grace_hours"]
    assert _stored(key) == before
    assert alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours={ROTATE_GRACE_MAX_HOURS}").status_code == 200


@pytest.mark.xfail(strict=True, reason="portal/api/errors.py to_api_error locates a DRF ValidationError by the "
                   "HTTP method (PUT -> body), though rotate's grace_hours is a query parameter")
def test_a_bad_grace_period_is_located_in_the_query(ram_world, alice):
    key, _ = factories.make_inference_key(ram_world.research)
    response = alice.put(f"{KEYS}/{key.uuid}/rotate?grace_hours={ROTATE_GRACE_MAX_HOURS + 1}")
    assert [loc for loc, _ in _problems(response)] == [["query", "grace_hours"]]


# --- the schema ----------------------------------------------------------------------------------

def test_the_schema_documents_the_grace_maximum(openapi_schema):
    parameters = openapi_schema["paths"][f"{KEYS}/{{key_id}}/rotate"]["put"]["parameters"]
    grace = next(parameter for parameter in parameters if parameter["name"] == "grace_hours")
    assert (grace["schema"]["minimum"], grace["schema"]["maximum"], grace["schema"]["default"]) == (
        0, ROTATE_GRACE_MAX_HOURS, 24)
