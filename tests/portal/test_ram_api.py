"""RAM management: policies, attachments, members, management keys, the simulator."""

import pytest

from portal.models import AuditLog, Policy
from tests.api_helpers import client_for

POLICIES = "/api/v1/ram/policies"
GOOD = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": ["usage:*", "aicontent:*"], "Resource": "*"}]}


@pytest.fixture
def alice(ram_world):
    return client_for(ram_world.alice)


def test_system_policies_exist_and_read_only_follows_access_levels(ram_world, alice):
    body = alice.get(POLICIES).json()
    names = {p["name"] for p in body["items"]}
    assert {"AdministratorAccess", "ReadOnlyAccess", "BillingFullAccess", "KeyManagerAccess",
            "UsageReadOnlyAccess", "ResearchKeys"} <= names
    read_only = alice.get(f"{POLICIES}/ReadOnlyAccess").json()["document"]["Statement"][0]["Action"]
    assert "aicontent:ModelRouterQueryCostModelDetail" in read_only  # a "Query" that is a read
    assert "keys:ListKeys" in read_only and "keys:CreateKey" not in read_only
    assert not any(a.startswith("ram:Create") or a.startswith("ram:Attach") for a in read_only)


def test_create_update_delete_a_custom_policy_with_audit(ram_world, alice):
    created = alice.post(POLICIES, {"name": "UsageOnly", "document": GOOD, "description": "d"}, format="json")
    assert created.status_code == 201, created.json()
    changed = {**GOOD, "Statement": [{**GOOD["Statement"][0], "Effect": "Deny"}]}
    assert alice.put(f"{POLICIES}/UsageOnly", {"document": changed}, format="json").json()["document"] == changed
    assert alice.delete(f"{POLICIES}/UsageOnly").status_code == 204
    assert not Policy.objects.filter(name="UsageOnly").exists()
    trail = list(AuditLog.objects.filter(action__startswith="policy.").values_list("action", "actor__user__username"))
    assert ("policy.create", "alice") in trail and ("policy.update", "alice") in trail
    assert ("policy.delete", "alice") in trail


@pytest.mark.parametrize(
    "document, expected",
    [
        ({"Version": "2", "Statement": GOOD["Statement"]}, "Version"),
        ({"Version": "1", "Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}, "Effect"),
        ({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                         "Condition": {"StringEqualz": {"acs:SourceIp": "x"}}}]}, "StringEqualz"),
        ({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                         "Condition": {"IpAddress": {"acs:SourceIp": "999.1.1.1"}}}]}, "999.1.1.1"),
        ({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}] * 200}, "6144"),
        ({"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                         "Condition": {"StringEquals": {"acs:SourceIp": "a\x00b"}}}]}, "NUL"),
        ({"Version": "1", "Statement": [{"Sid": "s\x00", "Effect": "Allow", "Action": "*", "Resource": "*"}]}, "NUL"),
    ],
    ids=["bad-version", "bad-effect", "unknown-operator", "bad-cidr", "oversized", "nul-in-a-value", "nul-in-sid"],
)
def test_a_malformed_policy_is_rejected_with_the_reason(ram_world, alice, document, expected):
    response = alice.post(POLICIES, {"name": "Broken", "document": document}, format="json")
    assert response.status_code == 422
    assert expected in str(response.json()["detail"])
    assert not Policy.objects.filter(name="Broken").exists()


def test_a_rejected_update_leaves_the_policy_as_it_was(ram_world, alice):
    before = Policy.objects.get(name="ResearchKeys").document
    response = alice.put(f"{POLICIES}/ResearchKeys", {"document": {"Version": "1"}}, format="json")
    assert response.status_code == 422
    assert Policy.objects.get(name="ResearchKeys").document == before


def test_system_policies_cannot_be_changed(ram_world, alice):
    assert alice.delete(f"{POLICIES}/AdministratorAccess").status_code == 422
    assert alice.put(f"{POLICIES}/ReadOnlyAccess", {"document": GOOD}, format="json").status_code == 422


def test_attach_and_detach_change_what_a_member_may_do(ram_world, alice):
    bob = client_for(ram_world.bob)
    assert bob.get("/api/v1/gateway/keys").status_code == 403
    attach = alice.post(f"{POLICIES}/KeyManagerAccess/attach", {"member": str(ram_world.bob.uuid)}, format="json")
    assert attach.status_code == 200
    assert bob.get("/api/v1/gateway/keys").status_code == 200
    alice.post(f"{POLICIES}/KeyManagerAccess/detach", {"member": str(ram_world.bob.uuid)}, format="json")
    assert bob.get("/api/v1/gateway/keys").status_code == 403


def test_policies_reach_members_through_groups(ram_world, alice):
    from portal import services

    group = services.create_group(actor=services.SYSTEM, organization=ram_world.acme, name="Key admins",
                                  members=[ram_world.bob])
    alice.post(f"{POLICIES}/KeyManagerAccess/attach", {"group": str(group.uuid)}, format="json")
    assert client_for(ram_world.bob).get("/api/v1/gateway/keys").status_code == 200


def test_a_foreign_member_or_policy_is_not_found(ram_world, alice):
    response = alice.post(f"{POLICIES}/ReadOnlyAccess/attach", {"member": str(ram_world.charlie.uuid)}, format="json")
    assert response.status_code == 404
    charlie = client_for(ram_world.charlie)
    assert charlie.get(f"{POLICIES}/ResearchKeys").status_code == 404
    assert "ResearchKeys" not in str(charlie.get(POLICIES).json())


def test_explicit_deny_beats_administrator_access(ram_world, alice):
    alice.post(POLICIES, {"name": "NoDeletes", "document": {"Version": "1", "Statement": [
        {"Effect": "Deny", "Action": "keys:DeleteKey", "Resource": "*"}]}}, format="json")
    alice.post(f"{POLICIES}/NoDeletes/attach", {"member": str(ram_world.amir.uuid)}, format="json")
    alice.post(f"{POLICIES}/AdministratorAccess/attach", {"member": str(ram_world.amir.uuid)}, format="json")
    simulated = alice.post("/api/v1/ram/simulate", {
        "member": str(ram_world.amir.uuid), "action": "keys:DeleteKey",
        "resource": f"acs:keys:*:{ram_world.acme.pk}:apikey/1"}, format="json").json()
    assert simulated["decision"] == "ExplicitDeny"
    assert simulated["matched"] == [{"policy": "NoDeletes", "statement": 0, "sid": None, "effect": "Deny"}]


def test_the_simulator_reports_allow_and_implicit_deny_with_conditions(ram_world, alice):
    def simulate(department):
        return alice.post("/api/v1/ram/simulate", {
            "member": str(ram_world.dora.uuid), "action": "keys:CreateKey",
            "resource": f"acs:keys:*:{ram_world.acme.pk}:apikey/*",
            "context": {"usage:DepartmentId": str(department.pk)}}, format="json").json()

    assert simulate(ram_world.research)["decision"] == "Allow"
    assert simulate(ram_world.research)["matched"][0]["policy"] == "ResearchKeys"
    assert simulate(ram_world.support) == {"decision": "ImplicitDeny", "matched": []}


def test_a_new_member_starts_with_no_policy_at_all(ram_world):
    from tests import factories

    newcomer = factories.make_member(ram_world.acme, "newcomer")
    assert client_for(newcomer).get("/api/v1/ram/members").status_code == 403


def test_members_list_shows_roles_groups_and_policies(ram_world, alice):
    items = {m["username"]: m for m in alice.get("/api/v1/ram/members").json()["items"]}
    assert set(items) == {"alice", "amir", "bob", "dora"}
    assert items["bob"]["policies"] == ["UsageReadOnlyAccess"] and items["alice"]["role"] == "owner"


def test_management_keys_are_issued_once_listed_and_revoked(ram_world, alice):
    url = f"/api/v1/ram/members/{ram_world.bob.uuid}/management-keys"
    created = alice.post(url, {"name": "ci", "scopes": ["usage:read"]}, format="json").json()
    assert created["api_key"].startswith("sk_mg_") and len(created["api_key"]) == 6 + 64
    listed = alice.get(url).json()["items"]
    assert created["api_key"] not in str(listed) and any(k["id"] == created["id"] for k in listed)
    from rest_framework.test import APIClient

    bob = APIClient()
    bob.credentials(HTTP_AUTHORIZATION=f"Bearer {created['api_key']}")
    assert bob.get("/api/v1/ram/actions").status_code == 403  # scope usage:read does not cover ram
    revoked = alice.put(f"{url}/{created['id']}/revoke").json()
    assert revoked["status"] == "revoked"
    assert bob.get("/api/v1/ram/actions").status_code == 401
    assert alice.post(url, {"name": "bad", "scopes": ["everything"]}, format="json").status_code == 422


def test_actions_list_every_registered_action_with_its_level(ram_world, alice):
    items = {a["action"]: a for a in alice.get("/api/v1/ram/actions").json()["items"]}
    detail = items["aicontent:ModelRouterQueryCostModelDetail"]
    assert detail["access_level"] == "list" and "usage:DepartmentId" in detail["condition_keys"]
    assert items["ram:AttachPolicy"]["access_level"] == "permissions-management"
    assert "keys:VerifyKey" not in items  # platform-only actions are not for members


def test_source_ip_conditions_use_the_socket_and_trusted_proxies_only(ram_world, alice, settings):
    alice.post(POLICIES, {"name": "OfficeOnly", "document": {"Version": "1", "Statement": [
        {"Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"NotIpAddress": {"acs:SourceIp": "203.0.113.0/24"}}}]}}, format="json")
    alice.post(f"{POLICIES}/OfficeOnly/attach", {"member": str(ram_world.amir.uuid)}, format="json")
    alice.post(f"{POLICIES}/AdministratorAccess/attach", {"member": str(ram_world.amir.uuid)}, format="json")
    amir = client_for(ram_world.amir)
    assert amir.get("/api/v1/ram/members", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 403  # untrusted
    assert amir.get("/api/v1/ram/members", REMOTE_ADDR="203.0.113.9").status_code == 200
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    assert amir.get("/api/v1/ram/members", HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 200
