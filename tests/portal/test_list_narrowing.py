"""List endpoints narrow at the queryset: the RAM decision is taken per department and turned
into a filter, or per row when a policy names single rows (NetBox's restrict(), in our terms)."""

import pytest

from portal.ram import services as ram
from portal.ram.evaluator import Policy, decision_varies_within
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for

PREFIX = "acs:keys:*:42:apikey/"


def _policy(*resources: str, effect: str = "Allow", action: str = "keys:ListKeys") -> Policy:
    return Policy("p", {"Version": "1", "Statement": [{"Effect": effect, "Action": action,
                                                      "Resource": list(resources)}]})


@pytest.mark.parametrize("resource, varies", [
    ("*", False),
    ("acs:keys:*:42:apikey/*", False),
    ("acs:keys:*:42:*", False),
    ("acs:keys:*:*", False),
    ("acs:keys:*:7:apikey/*", False),  # another organization: matches none of ours
    ("acs:usage:*:42:department/*", False),
    ("acs:keys:*:42:apikey/17", True),
    ("acs:keys:*:42:apikey/1*", True),
    ("acs:keys:*:42:apikey/??", True),
    ("acs:keys:*:42:apikey??7", True),  # ? crosses the slash
    ("acs:keys:*:4?:apikey/*", False),
], ids=lambda value: str(value))
def test_a_decision_varies_within_a_collection_only_where_a_pattern_names_rows(resource, varies):
    assert decision_varies_within([_policy(resource)], "keys:ListKeys", PREFIX) is varies
    # A statement about another action never matters.
    assert decision_varies_within([_policy(resource, action="usage:*")], "keys:ListKeys", PREFIX) is False


def test_deny_statements_and_not_resource_count_too():
    deny = Policy("d", {"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "keys:List*", "NotResource": "acs:keys:*:42:apikey/9"}]})
    assert decision_varies_within([deny], "keys:ListKeys", PREFIX) is True


def _custom(world, name, statements):
    policy = ram.create_policy(actor=SYSTEM, organization=world.acme, name=name,
                               document={"Version": "1", "Statement": statements})
    ram.attach_policy(actor=SYSTEM, policy=policy, member=world.bob)


def _listed(member) -> set[str]:
    response = client_for(member).get("/api/v1/gateway/keys?page_size=100")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["total"] == len(body["items"])
    return {item["name"] for item in body["items"]}


def test_a_policy_naming_one_key_lists_that_key_alone(ram_world):
    research_key, _ = factories.make_inference_key(ram_world.research, name="research-key")
    support_key, _ = factories.make_inference_key(ram_world.support, name="support-key")
    _custom(ram_world, "OneKey", [{"Effect": "Allow", "Action": "keys:ListKeys",
                                   "Resource": f"acs:keys:*:{ram_world.acme.pk}:apikey/{support_key.pk}"}])
    assert _listed(ram_world.bob) == {"support-key"}
    assert research_key.pk != support_key.pk


def test_a_deny_on_one_key_hides_it_inside_an_allowed_department(ram_world):
    factories.make_inference_key(ram_world.research, name="research-key")
    hidden, _ = factories.make_inference_key(ram_world.research, name="hidden-key")
    factories.make_inference_key(ram_world.support, name="support-key")
    acme = ram_world.acme.pk
    _custom(ram_world, "ResearchButOne", [
        {"Effect": "Allow", "Action": "keys:ListKeys", "Resource": f"acs:keys:*:{acme}:apikey/*",
         "Condition": {"StringEquals": {"usage:DepartmentId": str(ram_world.research.pk)}}},
        {"Effect": "Deny", "Action": "keys:ListKeys", "Resource": f"acs:keys:*:{acme}:apikey/{hidden.pk}"}])
    assert _listed(ram_world.bob) == {"research-key"}


def test_a_department_condition_narrows_per_department(ram_world):
    factories.make_inference_key(ram_world.research, name="research-key")
    factories.make_inference_key(ram_world.support, name="support-key")
    factories.make_inference_key(ram_world.sales, name="globex-key")
    _custom(ram_world, "AllButSupport", [
        {"Effect": "Allow", "Action": "keys:ListKeys", "Resource": "*",
         "Condition": {"StringNotEquals": {"usage:DepartmentId": str(ram_world.support.pk)}}}])
    assert _listed(ram_world.bob) == {"research-key"}


def test_a_member_allowed_nothing_is_refused_the_list(ram_world):
    factories.make_inference_key(ram_world.research, name="research-key")
    response = client_for(ram_world.bob).get("/api/v1/gateway/keys")
    assert response.status_code == 403
    assert response.json()["action"] == "keys:ListKeys"


def test_an_owner_with_no_keys_gets_an_empty_list(ram_world):
    response = client_for(ram_world.charlie).get("/api/v1/gateway/keys")
    assert response.status_code == 200 and response.json()["items"] == []
