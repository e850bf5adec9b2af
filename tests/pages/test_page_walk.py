"""One walk over every portal page (API.md §11), as test_endpoint_access walks the API: each page
goes through the one door (RamPage) with a registered action per method and a resource
declaration, an anonymous visitor is sent to the login page, and charlie (Globex) reaches none of
Acme's objects by URL."""

from decimal import Decimal

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from portal.pages.door import RamPage
from portal.ram.actions import ACTIONS

# The door's own small views and Django's auth views: no organization data behind them.
OUTSIDE_THE_DOOR = {"switch-organization", "set-zone", "login", "logout", "password_reset", "password_reset_done",
                    "password_reset_confirm", "password_reset_complete", "set_language"}
# The APIs; `^v1/` is the gateway under runserver (inference keys, tests/gateway walks its refusals).
NOT_PAGES = ("admin/", "api/", "api-auth/", "calls/", "^v1/")


def _page_patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            if not route.startswith(NOT_PAGES):
                yield from _page_patterns(entry, route)
        elif isinstance(entry, URLPattern) and not route.startswith(NOT_PAGES) and entry.name not in OUTSIDE_THE_DOOR:
            yield route, entry


PAGE_PATTERNS = sorted(_page_patterns(), key=lambda item: item[0])


def test_every_page_of_api_md_11_is_there():
    routes = {route for route, _ in PAGE_PATTERNS}
    for wanted in ("", "usage/", "usage/export.csv", "keys/", "keys/new/", "billing/", "billing/budgets/",
                   "access/", "access/simulate/", "audit/"):
        assert wanted in routes, wanted


@pytest.mark.parametrize(("route", "entry"), PAGE_PATTERNS, ids=[r or "/" for r, _ in PAGE_PATTERNS])
def test_every_page_goes_through_the_door_with_declared_actions(route, entry):
    view_class = entry.callback.view_class
    assert issubclass(view_class, RamPage), f"{route} is not a RamPage"
    methods = [m.upper() for m in view_class.http_method_names
               if m not in ("options", "head") and hasattr(view_class, m)]
    assert methods, route
    for method in methods:
        assert method in view_class.ram_actions, f"{route} {method} declares no RAM action"
        assert view_class.ram_actions[method] in ACTIONS, f"{route} {method}: not a registered action"
    assert view_class.ram_resource is not None, f"{route} declares no ram_resource"


def _concrete(route: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        route = route.replace(f"<uuid:{name}>", value).replace(f"<str:{name}>", value).replace(f"<{name}>", value)
    return "/" + route


@pytest.fixture
def acme_objects(world):
    """One Acme object of each kind a page URL names."""
    from billing.budgets import create_budget
    from keys import services as key_services
    from portal.ram import services as ram
    from portal.services import SYSTEM
    from tests.billing.invoice_factories import the_walk_invoice

    key = key_services.create_inference_key(actor=SYSTEM, department=world.research, name="acme-walk").key
    budget = create_budget(actor=SYSTEM, organization=world.acme, scope="organization", amount=Decimal("100"))
    policy = ram.create_policy(actor=SYSTEM, organization=world.acme, name="AcmeWalk",
                               document={"Version": "1", "Statement": [
                                   {"Effect": "Allow", "Action": "keys:ListKeys", "Resource": "*"}]})
    invoice = the_walk_invoice(world.acme)
    return {"uuid": str(key.uuid), "key_id": str(key.uuid), "invoice_id": str(invoice.uuid),
            "budget_id": str(budget.uuid), "name": policy.name}


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "entry"), PAGE_PATTERNS, ids=[r or "/" for r, _ in PAGE_PATTERNS])
def test_anonymous_is_sent_to_login_and_charlie_never_reaches_acme(client, world, acme_objects, route, entry):
    url = _concrete(route, acme_objects)
    assert "<" not in url, f"the walk has no value for {route}"
    view_class = entry.callback.view_class
    method = "get" if hasattr(view_class, "get") else "post"
    anonymous = getattr(client, method)(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/"), url
    client.force_login(world.charlie.user)
    response = getattr(client, method)(url)
    if any(name in route for name in ("<uuid:", "<str:", "<uuid>", "<name>")):
        assert response.status_code == 404, f"charlie reached Acme's {url}: {response.status_code}"
    else:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert b"acme-walk" not in body and b"AcmeWalk" not in body, url


@pytest.mark.django_db
def test_the_walks_markers_are_visible_to_acme_so_their_absence_means_something(client, world, acme_objects):
    client.force_login(world.alice.user)
    assert b"acme-walk" in client.get("/keys/").content
    assert b"AcmeWalk" in client.get("/access/").content
    for route in ("keys/<uuid:uuid>/", "billing/invoices/<uuid:invoice_id>/", "billing/budgets/<uuid:budget_id>/",
                  "access/policies/<str:name>/"):
        assert client.get(_concrete(route, acme_objects)).status_code == 200, route
