"""The OpenAPI schema covers every API endpoint, names its RAM action, validates as OpenAPI 3;
the docs page loads its assets from this server, not the internet."""

import re

import pytest
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from tests.test_endpoint_access import API_PATTERNS, UNGUARDED


@pytest.fixture(scope="module")
def schema():
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)


def test_every_endpoint_is_in_the_schema_with_its_ram_action(schema):
    documented = {path.strip("/") for path in schema["paths"]}
    for route, entry in API_PATTERNS:
        if entry.name in UNGUARDED:
            continue
        path = route
        for converter in ("<uuid:", "<str:", "<int:"):
            path = path.replace(converter, "{")
        path = path.replace(">", "}")
        assert path.strip("/") in documented, route
        for method in entry.callback.view_class.ram_actions:
            operation = schema["paths"]["/" + path][method.lower()]
            assert f"RAM action `{entry.callback.view_class.ram_actions[method]}`" in operation["description"]
            assert {"401", "403"} <= set(operation["responses"]), (route, method)


def test_the_docs_page_works_offline():
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist" in page
    assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page


def test_the_response_validator_catches_a_wrong_shape(db, schema_validator):
    import jsonschema

    with pytest.raises(jsonschema.ValidationError):
        schema_validator("/api/v1/portal/management/balance", "get", {"meta": {"code": "x"}, "data": None})
    with pytest.raises(jsonschema.ValidationError):
        schema_validator("/api/v1/obs/usage", "get", {"items": [{"date": None}], "total": 1})


def test_request_text_says_what_every_charfield_refuses(schema):
    # DRF's CharField refuses NUL, and a value blank once trimmed unless blank is allowed: the
    # schema says so (a generated client met both as undocumented 422s), without hiding a
    # field's own pattern.
    components = schema["components"]["schemas"]
    name = components["ManagementKeyCreateRequest"]["properties"]["name"]
    assert re.search(name["pattern"], "ops key")
    for refused in ("", " \t", "\u3000", "a\x00b"):
        assert not re.search(name["pattern"], refused), refused
    (description, _blank) = components["PolicyUpdateRequest"]["properties"]["description"]["oneOf"]
    assert re.search(description["pattern"], "  ") and not re.search(description["pattern"], "\x00")
    # "" is the other alternative's, and only its: oneOf needs exactly one to match.
    assert _blank == {"type": "string", "maxLength": 0} and not re.search(description["pattern"], "")
    scope = components["ManagementKeyCreateRequest"]["properties"]["scopes"]["items"]
    assert scope["pattern"] == r"^[a-z]+:(read|write)$|^\*$"
