"""Personas, as in the stories the tests tell: alice owns Acme, bob is a plain member of
Acme, charlie owns Globex (another organization) and must never see Acme's data."""

from dataclasses import dataclass

import pytest

from portal.models import Department, Member, Organization
from tests import factories


@dataclass
class World:
    acme: Organization
    globex: Organization
    research: Department
    support: Department
    sales: Department
    alice: Member
    amir: Member
    bob: Member
    charlie: Member


@pytest.fixture
def world(db) -> World:
    acme = factories.make_organization("Acme", timezone="Asia/Shanghai", currency="CNY")
    globex = factories.make_organization("Globex", timezone="America/New_York", currency="USD")
    return World(
        acme=acme,
        globex=globex,
        research=factories.make_department(acme, "Research"),
        support=factories.make_department(acme, "Support"),
        sales=factories.make_department(globex, "Sales"),
        alice=factories.make_member(acme, "alice", role="owner"),
        amir=factories.make_member(acme, "amir", role="admin"),
        bob=factories.make_member(acme, "bob", role="member"),
        charlie=factories.make_member(globex, "charlie", role="owner"),
    )


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness buys nothing in tests and costs seconds per persona.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ram_world(world):
    """alice owns Acme; bob reads usage only; dora manages keys of Research only; charlie owns Globex."""
    from portal.ram import services as ram
    from portal.services import SYSTEM
    from tests.api_helpers import attach

    dora = factories.make_member(world.acme, "dora", role="member")
    attach(world.bob, "UsageReadOnlyAccess")
    dora_policy = ram.create_policy(actor=SYSTEM, organization=world.acme, name="ResearchKeys", document={
        "Version": "1",
        "Statement": [{
            "Effect": "Allow",
            "Action": "keys:*",
            "Resource": f"acs:keys:*:{world.acme.pk}:apikey/*",
            "Condition": {"StringEquals": {"usage:DepartmentId": str(world.research.pk)}},
        }],
    })
    ram.attach_policy(actor=SYSTEM, policy=dora_policy, member=dora)
    world.dora = dora
    return world


@pytest.fixture(autouse=True)
def _system_policies_in_transactional_tests(request):
    """A transactional test starts after another one's flush, which empties every table, the
    system policies their migration wrote included: put them back (idempotent), as production
    always has them. (Django runs transactional tests last, so which ones follow which depends
    on what a run selects.)"""
    marker = request.node.get_closest_marker("django_db")
    if (marker and marker.kwargs.get("transaction")) or "transactional_db" in request.fixturenames:
        request.getfixturevalue("transactional_db")
        from portal.models import Policy
        from portal.ram.system_policies import sync_system_policies

        sync_system_policies(Policy)


@pytest.fixture(autouse=True)
def _fold_usage_in_the_ingest_transaction(settings):
    """Tests read right after ingesting, mostly inside a transaction that never commits (so no
    on_commit folding would ever run): each ingest transaction folds its own batch, as without a
    broker. Tests of the fold queue itself (tests/usage/test_fold_queue.py) turn this off."""
    settings.USAGE_FOLD_IN_TRANSACTION = True


@pytest.fixture(autouse=True)
def _empty_cache():
    # Cached verifications and throttles must not leak from one test into the next.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _forget_process_memos():
    from keys import services

    services.forget_process_memos()


@pytest.fixture(scope="session")
def openapi_schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def schema_validator(openapi_schema):
    """Validate a response body against the OpenAPI schema of (path, method)'s 200/201 answer."""
    import json

    import jsonschema

    def openapi_to_json_schema(node):
        # OpenAPI 3.0 schemas are draft-4 JSON Schema plus "nullable".
        if isinstance(node, dict):
            node = {key: openapi_to_json_schema(value) for key, value in node.items()}
            if node.pop("nullable", False):
                node = {"anyOf": [node, {"type": "null"}]}
            return node
        if isinstance(node, list):
            return [openapi_to_json_schema(item) for item in node]
        return node

    def validate(path: str, method: str, body) -> None:
        responses = openapi_schema["paths"][path][method]["responses"]
        success = responses.get("200") or responses.get("201")
        schema = success["content"]["application/json"]["schema"]
        document = json.loads(json.dumps({"components": openapi_schema["components"], **schema}, default=str))
        jsonschema.Draft4Validator(openapi_to_json_schema(document)).validate(body)

    return validate
