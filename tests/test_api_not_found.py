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
