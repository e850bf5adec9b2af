"""A batch whose values have the wrong JSON type is a 422 naming each one, never a 500 (found by
the schema fuzzer, tests/fuzz)."""

import pytest
from rest_framework.test import APIClient

from tests import factories


@pytest.mark.parametrize("model", [{}, [], ["qwen-plus"], 7])
def test_an_event_whose_model_is_not_a_string_is_a_422_not_a_500(ram_world, model):
    from keys import services as key_services
    from portal.services import SYSTEM

    key, _ = factories.make_inference_key(ram_world.research)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + key_services.create_service_token(actor=SYSTEM, name="gw").secret)
    event = {**factories.event(key, factories.make_model()), "model": model}
    response = client.post("/api/v1/usage/events", {"events": [event]}, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"] == ["body", "events", 0, "model"]
