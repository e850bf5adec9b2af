"""Every path under the API answers errors in JSON in its dialect's shape: unknown paths and
malformed ids too (never Django's HTML 404 page)."""

import pytest
from rest_framework.test import APIClient

from tests.api_helpers import client_for


@pytest.mark.parametrize("path, shape", [
    ("/api/v1/gateway/keys/not-a-uuid", {"detail"}),
    ("/api/v1/gateway/keys/not-a-uuid/rotate", {"detail"}),
    ("/api/v1/ram/members/123/management-keys", {"detail"}),
    ("/api/v1/no-such-endpoint", {"detail"}),
    ("/api/v2/anything", {"detail"}),
    ("/api/v1/modelRouter/open/billing/cost/nothing", {"requestId", "success", "errCode", "errMessage",
                                                         "httpStatusCode", "data", "maxResults", "nextToken"}),
    ("/api/v1/billing/usage/extra", {"error"}),
    ("/api/v1/portal/management/nothing", {"meta", "data"}),
    ("/calls/nothing", {"detail"}),
], ids=lambda value: value if isinstance(value, str) else "")
def test_unknown_api_paths_answer_json_in_their_dialect(ram_world, path, shape):
    for client in (APIClient(), client_for(ram_world.alice)):
        response = client.get(path)
        assert response.status_code == 404
        assert response["Content-Type"].startswith("application/json"), response.content[:200]
        assert set(response.json()) == shape


def test_pages_outside_the_api_keep_the_html_404(db):
    response = APIClient().get("/no-such-page")
    assert response.status_code == 404 and not response["Content-Type"].startswith("application/json")


def test_format_csv_on_venice_streams_the_same_csv_as_accept(ram_world):
    alice = client_for(ram_world.alice)
    by_accept = alice.get("/api/v1/billing/usage", HTTP_ACCEPT="text/csv")
    by_format = alice.get("/api/v1/billing/usage?format=csv")
    assert by_accept["Content-Type"] == by_format["Content-Type"] == "text/csv"
    assert b"".join(by_accept.streaming_content) == b"".join(by_format.streaming_content)
    as_json = alice.get("/api/v1/billing/usage?format=json", HTTP_ACCEPT="text/csv")
    assert as_json["Content-Type"].startswith("application/json") and "data" in as_json.json()


def test_an_unknown_format_is_a_400_naming_the_parameter(ram_world):
    response = client_for(ram_world.alice).get("/api/v1/billing/usage?format=xml")
    assert response.status_code == 400 and "format" in response.json()["details"]


def test_format_elsewhere_is_not_a_renderer_override(ram_world):
    response = client_for(ram_world.alice).get("/api/v1/ram/actions?format=csv")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("path, shape", [
    ("/api/v1/nothing/", {"detail"}),
    ("/api/v1/gateway/keys/", {"detail"}),
    ("/api/", {"detail"}),
    ("/api/v1/modelRouter/open/billing/cost/trend/", {"requestId", "success", "errCode", "errMessage",
                                                       "httpStatusCode", "data", "maxResults", "nextToken"}),
    ("/api/v1/billing/usage/", {"error"}),
    ("/api/v1/portal/management/usage/", {"meta", "data"}),
    ("/calls/stats/", {"detail"}),
], ids=lambda value: value if isinstance(value, str) else "")
def test_unknown_paths_answer_json_for_every_method_and_trailing_slash(ram_world, method, path, shape):
    response = getattr(client_for(ram_world.alice), method)(path)
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    assert set(response.json()) == shape


def test_a_weave_project_not_found_answers_like_every_other_404(ram_world):
    body = {"project_id": str(ram_world.globex.uuid), "start": "2026-01-01T00:00:00Z"}
    response = client_for(ram_world.alice).post("/calls/stats", body, format="json")
    assert response.status_code == 404
    assert response.json() == client_for(ram_world.alice).get("/api/v1/gateway/keys/not-a-uuid").json() \
        == {"detail": "Not found."}


@pytest.mark.parametrize("path, name, dialect_status", [
    ("/api/v1/gateway/keys?team_id=", "team_id", 422),
    ("/api/v1/obs/usage?start_date=", "start_date", 422),
    ("/api/v1/billing/usage?startDate=", "startDate", 400),
    ("/api/v1/billing/usage-analytics?lookback=", "lookback", 400),
    ("/api/v1/modelRouter/open/billing/cost/overview?startTime=0&endTime=86400&clientId=", "clientId", 400),
    ("/api/v1/billing/invoices?status=", "status", 422),
], ids=lambda value: value if isinstance(value, str) else "")
def test_an_empty_query_parameter_is_refused_not_ignored(ram_world, path, name, dialect_status):
    response = client_for(ram_world.alice).get(path)
    assert response.status_code == dialect_status, response.content
    assert name in response.content.decode()


def test_form_bodies_are_refused_as_unsupported(ram_world):
    response = client_for(ram_world.alice).post("/api/v1/ram/simulate", {"member": "x"}, format="multipart")
    assert response.status_code == 415
    assert set(response.json()) == {"detail"}


def test_a_body_that_is_not_json_is_a_documented_400(ram_world, openapi_schema):
    response = client_for(ram_world.alice).post("/api/v1/ram/simulate", "{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert {"400", "406", "415"} <= set(openapi_schema["paths"]["/api/v1/ram/simulate"]["post"]["responses"])
