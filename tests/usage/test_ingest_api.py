import json

import pytest
from rest_framework.test import APIClient

from keys import services
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for
from usage.models import UsageEvent

EVENTS = "/api/v1/usage/events"


@pytest.fixture
def gateway(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {services.create_service_token(actor=SYSTEM, name='gw').secret}")
    return client


def test_the_gateway_reports_a_batch_and_replays_it(world, gateway):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    batch = {"events": [factories.event(key, model, request_id=f"r{i}") for i in range(5)]}
    assert gateway.post(EVENTS, batch, format="json").json() == {"accepted": 5, "duplicates": 0}
    assert gateway.post(EVENTS, batch, format="json").json() == {"accepted": 0, "duplicates": 5}
    assert UsageEvent.objects.count() == 5


def test_a_bad_batch_lists_each_bad_event_and_stores_nothing(world, gateway):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    unknown_model = factories.event(key, model)
    unknown_model["model"] = "nope"
    batch = {"events": [factories.event(key, model), factories.event(key, model, prompt_tokens=-1), unknown_model]}
    response = gateway.post(EVENTS, batch, format="json")
    assert response.status_code == 422
    assert [d["loc"] for d in response.json()["detail"]] == [["body", "events", 1, "prompt_tokens"],
                                                            ["body", "events", 2, "model"]]
    assert UsageEvent.objects.count() == 0


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": "x"}, {"events": [], "extra": 1}, []],
                         ids=["no-events", "empty", "not-a-list", "extra-field", "array-body"])
def test_malformed_bodies_are_422(world, gateway, body):
    response = gateway.post(EVENTS, body, format="json")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][0] == "body"


def test_members_cannot_report_usage(world):
    response = client_for(world.alice).post(EVENTS, {"events": []}, format="json")
    assert response.status_code == 403 and response.json()["action"] == "usage:IngestEvents"


def test_a_batch_with_a_charset_in_its_content_type_is_stored_too(world, gateway):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    body = json.dumps({"events": [factories.event(key, model, request_id="cs")]})
    response = gateway.post(EVENTS, body, content_type="application/json; charset=utf-8")
    assert response.json() == {"accepted": 1, "duplicates": 0}


def test_the_gateway_reports_cache_writes_within_the_prompt(world, gateway):
    model = factories.make_model("claude-like", cny=("3", "0.3", "15", "0", "0", "3.75"))
    key, _ = factories.make_inference_key(world.research)
    written = factories.event(key, model, request_id="w", prompt_tokens=1000, cached_tokens=300,
                              cache_creation_tokens=700)
    assert gateway.post(EVENTS, {"events": [written]}, format="json").json() == {"accepted": 1, "duplicates": 0}
    stored = UsageEvent.objects.get(request_id="w")
    assert (stored.cache_creation_tokens, stored.cache_write_cost) == (700, stored.cost - stored.output_cost
                                                                       - stored.cache_read_cost - stored.input_cost)
    too_many = dict(written, request_id="x", cache_creation_tokens=701)
    response = gateway.post(EVENTS, {"events": [too_many]}, format="json")
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert [str(part) for part in problem["loc"]] == ["body", "events", "0", "cache_creation_tokens"]
    assert "cannot exceed prompt_tokens" in problem["msg"]
    assert not UsageEvent.objects.filter(request_id="x").exists()


@pytest.mark.parametrize("field", ["model", "request_id", "trace_id"])
def test_a_lone_surrogate_is_malformed_json_and_stores_nothing(world, gateway, field):
    # Python's json takes "\ud969" and returns a str no UTF-8 encoder takes: it was a 500 in the
    # model look-up (tests/fuzz). RFC 7493 refuses it as JSON, in the API's 400 shape.
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    good = factories.event(key, model, request_id="fine")
    bad = dict(factories.event(key, model, request_id="bad"), **{field: "SURROGATE"})
    body = json.dumps({"events": [good, bad]}).replace("SURROGATE", "x\\ud969")
    response = gateway.post(EVENTS, body, content_type="application/json")
    assert response.status_code == 400
    assert "lone UTF-16 surrogate" in json.dumps(response.json())
    assert UsageEvent.objects.count() == 0


def test_a_surrogate_pair_is_ordinary_text(world, gateway):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    body = json.dumps({"events": [factories.event(key, model, request_id="pair", trace_id="SMILE")]})
    response = gateway.post(EVENTS, body.replace("SMILE", "\\ud83d\\ude00"), content_type="application/json")
    assert response.json() == {"accepted": 1, "duplicates": 0}
    assert UsageEvent.objects.get(request_id="pair").trace_id == "\N{GRINNING FACE}"


@pytest.mark.parametrize("field", ["model", "request_id", "trace_id", "error_type"])
def test_a_nul_character_is_refused_naming_the_field(world, gateway, field):
    # PostgreSQL's text columns refuse NUL: it was a 500 in the model look-up (tests/fuzz).
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    bad = dict(factories.event(key, model, request_id="bad"), **{field: "a\x00b"})
    response = gateway.post(EVENTS, {"events": [factories.event(key, model, request_id="fine"), bad]}, format="json")
    assert response.status_code == 422
    assert [d["loc"] for d in response.json()["detail"]] == [["body", "events", 1, field]]
    assert UsageEvent.objects.count() == 0
