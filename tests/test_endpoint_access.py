"""One walk over every API endpoint: each declares its RAM action, and anonymous, foreign and
unprivileged callers are refused (NetBox's generic API test, in our terms)."""

from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from billing.budgets import create_budget
from keys import services as key_services
from portal.ram.actions import ACTIONS
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for
from tests.billing.invoice_factories import the_walk_invoice

# Endpoints outside RAM by design: the schema and docs (API.md §9).
UNGUARDED = {"schema", "docs"}


def _api_patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _api_patterns(entry, route)
        elif isinstance(entry, URLPattern) and (route.startswith("api/") or route == "calls/stats"):
            yield route, entry


API_PATTERNS = sorted(_api_patterns(), key=lambda item: item[0])


def _methods(view_class):
    return [m.upper() for m in view_class.http_method_names if m not in ("options", "head") and hasattr(view_class, m)]


def test_there_are_api_endpoints_to_walk():
    assert len(API_PATTERNS) >= 15


@pytest.mark.parametrize("route, entry", API_PATTERNS, ids=[r for r, _ in API_PATTERNS])
def test_every_api_endpoint_declares_a_registered_action_per_method(route, entry):
    if entry.name in UNGUARDED:
        return
    view_class = entry.callback.view_class
    declared = getattr(view_class, "ram_actions", {})
    for method in _methods(view_class):
        assert method in declared, f"{route} {method} declares no RAM action"
        assert declared[method] in ACTIONS, f"{route} {method}: {declared[method]} is not registered"


@pytest.mark.parametrize("route, entry", API_PATTERNS, ids=[r for r, _ in API_PATTERNS])
def test_every_api_endpoint_declares_how_its_resource_is_found(route, entry):
    # Without a declaration the permission class refuses everything, so an undeclared view is
    # a bug that this walk names instead of a silent 403 in production.
    if entry.name in UNGUARDED:
        return
    view_class = entry.callback.view_class
    assert callable(getattr(view_class, "ram_resource", None)), f"{route} declares no ram_resource"
    if getattr(view_class.ram_resource, "__name__", "") == "the_object":
        assert hasattr(view_class, "get_queryset") and hasattr(view_class, "ram_target_of"), route


def test_a_view_without_a_declared_resource_is_refused(ram_world, rf):
    from portal.api.views import RamAPIView

    class Undeclared(RamAPIView):
        ram_actions = {"GET": "ram:ListActions"}

        def get(self, request):
            return Response({"reached": True})

    from rest_framework.response import Response
    from rest_framework.test import force_authenticate

    request = rf.get("/api/v1/undeclared")
    force_authenticate(request, user=ram_world.alice.user)
    response = Undeclared.as_view()(request)
    assert response.status_code == 403 and "reached" not in response.data


@pytest.fixture
def acme(ram_world):
    key, _ = factories.make_inference_key(ram_world.research, name="acme-walk-key")
    management_key = key_services.create_management_key(actor=SYSTEM, member=ram_world.bob, name="walk").key
    ram_world.budget = create_budget(actor=SYSTEM, organization=ram_world.acme, scope="organization",
                                     amount=Decimal("10"))
    return ram_world, key, management_key


def _webhook_of(organization):
    # An object route is walked with a real object of Acme's: an unknown id is a 404 to everyone,
    # which would hide whether bob and dora are refused by RAM.
    from billing.models import Webhook
    from billing.webhooks import encrypt_secret

    webhook = Webhook.objects.filter(organization=organization, deleted_at__isnull=True).first()
    return webhook or Webhook.objects.create(organization=organization, url="https://8.8.8.8/acme-walk",
                                             events=["invoice.issued"], secret_encrypted=encrypt_secret("whsec_walk"))


def _upstream():
    from keys.models import Upstream

    return Upstream.objects.first() or key_services.create_upstream(
        actor=SYSTEM, name="walk", base_url="https://provider.example/v1", api_key="sk-walk", model_codes=[])


def _url_and_body(route, world, key, management_key):
    values = {"<uuid:key_id>": str(key.uuid), "<str:name>": "ResearchKeys",
              "<uuid:member_uuid>": str(world.bob.uuid), "<int:key_id>": str(management_key.pk),
              "<uuid:budget_id>": str(world.budget.uuid), "<uuid:webhook_id>": str(_webhook_of(world.acme).uuid),
              "<uuid:invoice_id>": str(the_walk_invoice(world.acme).uuid),
              "<uuid:line_id>": str(the_walk_invoice(world.acme).lines.order_by("id").first().uuid),
              "<uuid:upstream_id>": str(_upstream().uuid)}
    url = "/" + route
    for placeholder, value in values.items():
        url = url.replace(placeholder, value)
    bodies = {
        "keys-list": {"name": "walk", "team_id": str(world.research.uuid)},
        "keys-detail": {"name": "walk"},
        "keys-verify": {"key": "sk-" + "a" * 48},
        "usage-ingest": {"events": [factories.event(key, factories.make_model())]},
        "ram-policies": {"name": "Walk", "document": {"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]}},
        "ram-policy": {"description": "changed"},
        "ram-policy-attach": {"member": str(world.bob.uuid)},
        "ram-policy-detach": {"member": str(world.bob.uuid)},
        "ram-management-keys": {"name": "walk"},
        "ram-simulate": {"member": str(world.bob.uuid), "action": "keys:ListKeys", "resource": "*"},
        "billing-budgets": {"scope": "organization", "amount": "5"},
        "billing-budget": {"amount": "20"},
        "billing-credit-grants": {"org_id": str(world.acme.uuid), "kind": "grant", "amount": "1"},
        # A public address (nothing is ever sent there: the walk emits no event).
        "billing-webhooks": {"url": "https://8.8.8.8/walk-hook", "events": ["invoice.issued"]},
        "billing-invoice-credit-notes": {"amount": "1.00", "reason": "walk"},
        # Valid queries, so that views whose resource is named in the query reach the decision.
        "weave-calls-stats": {"project_id": str(world.acme.uuid), "start": "2026-11-01T00:00:00Z"},
        **{name: {"startTime": 1761955200, "endTime": 1762041600} for name in (
            "modelrouter-breakdown", "modelrouter-model-detail", "modelrouter-models", "modelrouter-overview",
            "modelrouter-trend")},
        # model-detail's query names its model (required); whether it exists is the handler's business.
        "modelrouter-model-detail": {"startTime": 1761955200, "endTime": 1762041600, "modelId": 1},
    }
    return url, bodies


def _calls(acme):
    world, key, management_key = acme
    for route, entry in API_PATTERNS:
        if entry.name in UNGUARDED:
            continue
        url, bodies = _url_and_body(route, world, key, management_key)
        for method in _methods(entry.callback.view_class):
            yield entry.name, method, url, bodies.get(entry.name, {})


def _secrets_of_acme(world, key):
    return [str(world.acme.uuid), str(world.budget.uuid), str(world.research.uuid), str(key.uuid), "acme-walk-key",
            "ResearchKeys", str(world.alice.uuid), str(world.bob.uuid), "alice"]


def test_anonymous_callers_get_401_everywhere(acme):
    client = APIClient()
    for name, method, url, body in _calls(acme):
        response = getattr(client, method.lower())(url, body, format="json")
        assert response.status_code == 401, (name, method, response.status_code)


def test_charlie_from_another_organization_sees_nothing_of_acme(acme):
    world, key, _ = acme
    charlie = client_for(world.charlie)  # owner of Globex: allowed everything in his own organization
    for name, method, url, body in _calls(acme):
        response = getattr(charlie, method.lower())(url, body, format="json")
        text = response.content.decode()
        if any(marker in url for marker in _secrets_of_acme(world, key)):
            assert response.status_code in (403, 404), (name, method, response.status_code)
        for marker in _secrets_of_acme(world, key):
            assert marker not in text, (name, method, marker)
    key.refresh_from_db()
    assert key.status == "active" and key.deleted_at is None and key.name == "acme-walk-key"


def _is_write(name: str, method: str) -> bool:
    from portal.ram.actions import LIST, READ

    view = next(entry.callback.view_class for _, entry in API_PATTERNS if entry.name == name)
    return ACTIONS[view.ram_actions[method]].access_level not in (READ, LIST)


def test_bob_who_only_reads_usage_is_refused_every_write(acme):
    world, key, _ = acme
    bob = client_for(world.bob)
    writes = 0
    for name, method, url, body in _calls(acme):
        if not _is_write(name, method):
            continue
        writes += 1
        response = getattr(bob, method.lower())(url, body, format="json")
        assert response.status_code == 403, (name, method, response.status_code, response.content[:300])
        assert "action" in response.json() and "resource" in response.json()
    assert writes >= 10
    key.refresh_from_db()
    assert key.status == "active" and key.deleted_at is None and key.name == "acme-walk-key"


def _action(name: str, method: str):
    view = next(entry.callback.view_class for _, entry in API_PATTERNS if entry.name == name)
    return ACTIONS[view.ram_actions[method]]


def test_dora_who_manages_research_keys_only_is_refused_everything_else(acme):
    """dora is allowed `keys:*` on Research's keys and nothing more: every other action is 403 for
    her, and every key list shows Research's keys alone."""
    world, key, _ = acme
    support_key, _ = factories.make_inference_key(world.support, name="support-walk-key")
    dora = client_for(world.dora)
    refused = 0
    for name, method, url, body in _calls(acme):
        action = _action(name, method)
        if action.platform_only or action.member_baseline or action.service == "keys":
            continue
        response = getattr(dora, method.lower())(url, body, format="json")
        assert response.status_code == 403, (name, method, response.status_code, response.content[:300])
        refused += 1
    assert refused >= 20
    listed = dora.get("/api/v1/gateway/keys")
    assert listed.status_code == 200
    names = {item["name"] for item in listed.json()["items"]}
    assert "acme-walk-key" in names and "support-walk-key" not in names
    assert listed.json()["total"] == len(names)
    for team in (world.research, world.support):
        names = {item["name"] for item in dora.get(f"/api/v1/gateway/keys?team_id={team.uuid}").json()["items"]}
        assert "support-walk-key" not in names
    assert dora.get(f"/api/v1/gateway/keys/{support_key.uuid}").status_code == 403
    assert dora.get(f"/api/v1/gateway/keys/{key.uuid}").status_code == 200


def test_head_is_decided_exactly_as_get(acme):
    """Django answers HEAD with the GET handler, so HEAD must never skip the decision GET gets."""
    world, key, _ = acme
    for persona in (world.dora, world.bob, world.alice):
        client = client_for(persona)
        for name, method, url, body in _calls(acme):
            if method != "GET":
                continue
            got, head = client.get(url, body), client.head(url, body)
            assert head.status_code == got.status_code, (persona, name, got.status_code, head.status_code)
