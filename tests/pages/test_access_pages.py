"""The Access (RAM) pages (API.md §8, §11): alice manages Acme's members, groups and policies in the
browser as she would through the API; bob, who only reads usage, is refused; charlie, of Globex,
never sees any of it."""

import json

import pytest

from portal.api.permissions import request_context
from portal.models import AuditLog, Policy, PolicyAttachment
from portal.ram import services as ram
from portal.ram.actions import get_action
from portal.services import SYSTEM, create_group
from tests import factories
from tests.api_helpers import attach

pytestmark = pytest.mark.django_db

EDITOR = 'data-testid="policy-editor"'
ERRORS = 'data-testid="policy-errors"'


def _page(response) -> str:
    return response.content.decode()


def _document(*statements) -> dict:
    return {"Version": "1", "Statement": list(statements)}


@pytest.fixture
def alice(client, ram_world):
    client.force_login(ram_world.alice.user)
    return client


# --- the overview ---------------------------------------------------------------------------------

def test_the_access_page_shows_members_with_roles_and_policies_groups_and_both_kinds_of_policy(alice, ram_world):
    create_group(actor=SYSTEM, organization=ram_world.acme, name="Analysts", members=[ram_world.bob])
    ram.attach_policy(actor=SYSTEM, policy=ram.system_policy("ReadOnlyAccess"),
                      group=ram_world.acme.member_groups.get(name="Analysts"))
    body = _page(alice.get("/access/"))

    members = body.split('data-testid="members-table"')[1].split("</table>")[0]
    bob_row = members.split(f'data-member="{ram_world.bob.uuid}"')[1].split("</tr>")[0]
    assert "bob" in bob_row and "UsageReadOnlyAccess" in bob_row and "Analysts" in bob_row and "Member" in bob_row
    dora_row = members.split(f'data-member="{ram_world.dora.uuid}"')[1].split("</tr>")[0]
    assert "ResearchKeys" in dora_row
    alice_row = members.split(f'data-member="{ram_world.alice.uuid}"')[1].split("</tr>")[0]
    assert "Owner" in alice_row and "AdministratorAccess as owner" in alice_row

    groups = body.split('data-testid="groups-table"')[1].split("</table>")[0]
    assert "Analysts" in groups and "bob" in groups and "ReadOnlyAccess" in groups
    custom = body.split('data-testid="custom-policies-table"')[1].split("</table>")[0]
    assert "/access/policies/ResearchKeys/" in custom and "AdministratorAccess" not in custom
    system = body.split('data-testid="system-policies-table"')[1].split("</table>")[0]
    for name in ("AdministratorAccess", "ReadOnlyAccess", "UsageReadOnlyAccess", "KeyManagerAccess"):
        assert f"/access/policies/{name}/" in system
    assert "/access/policies/new/" in body and "/access/simulate/" in body


def test_bob_who_only_reads_usage_gets_the_403_page_naming_ram_list_policies(client, ram_world):
    client.force_login(ram_world.bob.user)
    response = client.get("/access/")
    assert response.status_code == 403
    assert 'data-testid="denied-action">ram:ListPolicies<' in _page(response)


def test_a_member_who_may_list_policies_but_not_members_sees_no_members_or_groups(client, ram_world):
    reader = ram.create_policy(actor=SYSTEM, organization=ram_world.acme, name="PoliciesOnly", document=_document(
        {"Effect": "Allow", "Action": ["ram:ListPolicies", "ram:GetPolicy"], "Resource": "*"}))
    ram.attach_policy(actor=SYSTEM, policy=reader, member=ram_world.bob)
    client.force_login(ram_world.bob.user)
    body = _page(client.get("/access/"))
    assert "PoliciesOnly" in body
    assert 'data-testid="members-table"' not in body and "dora" not in body
    assert "/access/policies/new/" not in body  # no ram:CreatePolicy, so no button
    # And on a policy page: the document, but neither its editor nor whom it is attached to.
    body = _page(client.get("/access/policies/ResearchKeys/"))
    assert 'data-testid="policy-document"' in body and EDITOR not in body and "dora" not in body


def test_an_organization_without_custom_policies_or_groups_says_what_to_do_next(client, world):
    client.force_login(world.charlie.user)
    body = _page(client.get("/access/"))
    empty = body.split('data-testid="custom-policies-empty"')[1].split("</div>")[0]
    assert "No custom policies yet." in empty and 'href="/access/policies/new/"' in empty
    assert 'data-testid="groups-empty"' in body and "admin site" in body
    assert "AdministratorAccess" in body  # the system policies are still there to attach


def test_custom_policies_are_paginated(alice, ram_world):
    for n in range(30):
        ram.create_policy(actor=SYSTEM, organization=ram_world.acme, name=f"Bulk{n:02d}",
                          document=_document({"Effect": "Allow", "Action": "usage:QueryUsage", "Resource": "*"}))
    first = _page(alice.get("/access/"))
    custom = first.split('data-testid="custom-policies-table"')[1].split("</table>")[0]
    assert "Bulk00" in custom and "Bulk23" in custom and "ResearchKeys" not in custom  # 25 of 31, by name
    following = first.split('data-testid="custom-policies-table"')[1].split('rel="next"')[0].rsplit('href="', 1)[1]
    second = _page(alice.get("/access/" + following.split('"')[0].replace("&amp;", "&")))
    custom = second.split('data-testid="custom-policies-table"')[1].split("</table>")[0]
    assert "ResearchKeys" in custom and "Bulk29" in custom and "Bulk00" not in custom


# --- tenant isolation -------------------------------------------------------------------------------

def test_charlie_never_sees_acmes_members_groups_or_custom_policies(client, ram_world):
    create_group(actor=SYSTEM, organization=ram_world.acme, name="AcmeAnalysts", members=[ram_world.bob])
    client.force_login(ram_world.charlie.user)
    body = _page(client.get("/access/"))
    assert "charlie" in body
    for acme_thing in ("ResearchKeys", "AcmeAnalysts", "dora", "bob", str(ram_world.bob.uuid)):
        assert acme_thing not in body
    # A system policy is shared, but who it is attached to in Acme is not his business.
    body = _page(client.get("/access/policies/UsageReadOnlyAccess/"))
    assert 'data-testid="attachments-empty"' in body and "bob" not in body


@pytest.mark.parametrize(("method", "url"), [
    ("get", "/access/policies/ResearchKeys/"),
    ("post", "/access/policies/ResearchKeys/"),
    ("post", "/access/policies/ResearchKeys/delete/"),
    ("post", "/access/policies/ResearchKeys/attach/"),
    ("post", "/access/policies/ResearchKeys/detach/"),
], ids=["read", "edit", "delete", "attach", "detach"])
def test_an_acme_policy_is_not_found_for_charlie(client, ram_world, method, url):
    client.force_login(ram_world.charlie.user)
    before = json.dumps(Policy.objects.get(name="ResearchKeys").document)
    response = getattr(client, method)(url, {"document": "{}", "member": str(ram_world.charlie.uuid)})
    assert response.status_code == 404
    assert json.dumps(Policy.objects.get(name="ResearchKeys").document) == before


def test_charlie_cannot_simulate_an_acme_member_nor_copy_an_acme_policy(client, ram_world):
    client.force_login(ram_world.charlie.user)
    body = _page(client.get("/access/simulate/", {"member": str(ram_world.bob.uuid), "action": "usage:QueryUsage"}))
    assert 'data-testid="simulate-decision"' not in body and "bob" not in body
    body = _page(client.get("/access/policies/new/", {"from": "ResearchKeys"}))
    editor = body.split(EDITOR)[1].split("</textarea>")[0]
    assert 'value="ResearchKeysCopy"' not in body and "usage:DepartmentId" not in editor


# --- the JSON editor ------------------------------------------------------------------------------------

INVALID = [
    pytest.param('{"Version": "1", "Statement": [', "This is not valid JSON", id="syntax-error"),
    pytest.param(json.dumps(_document({"Effect": "Perhaps", "Action": "keys:ListKeys", "Resource": "*"})),
                 "Statement[0].Effect", id="unknown-effect"),
    pytest.param(json.dumps(_document({"Effect": "Allow", "Action": "keys:ListKeys", "Resource": "*",
                                       "Condition": {"StringEqualz": {"acs:SourceIp": "x"}}})),
                 "StringEqualz", id="unknown-operator"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_an_invalid_new_policy_shows_the_reasons_beside_the_editor_and_stores_nothing(alice, ram_world, text, reason):
    policies, audits = Policy.objects.count(), AuditLog.objects.count()
    response = alice.post("/access/policies/new/", {"name": "Broken", "description": "", "document": text})
    body = _page(response)
    assert response.status_code == 200
    errors = body.split(ERRORS)[1].split("</ul>")[0]
    assert reason in errors
    assert EDITOR in body and "Statement" in body.split(EDITOR)[1].split("</textarea>")[0]  # the text is kept
    assert Policy.objects.count() == policies and AuditLog.objects.count() == audits


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_an_invalid_edit_shows_the_reasons_and_leaves_the_policy_as_it_was(alice, ram_world, text, reason):
    policy = Policy.objects.get(name="ResearchKeys")
    before, audits = policy.document, AuditLog.objects.count()
    response = alice.post("/access/policies/ResearchKeys/", {"description": "changed", "document": text})
    assert reason in _page(response).split(ERRORS)[1].split("</ul>")[0]
    policy.refresh_from_db()
    assert policy.document == before and policy.description == "" and AuditLog.objects.count() == audits


def test_a_new_policy_is_created_from_the_starter_document_and_audited(alice, ram_world):
    form = _page(alice.get("/access/policies/new/"))
    starter = form.split(EDITOR)[1].split(">", 1)[1].split("</textarea>")[0]
    starter = starter.replace("&quot;", '"').replace("&#x27;", "'")
    assert json.loads(starter)["Statement"][0]["Resource"] == f"acs:usage:*:{ram_world.acme.pk}:department/*"
    response = alice.post("/access/policies/new/", {"name": "ReadUsage", "description": "Usage only",
                                                    "document": starter})
    assert response.status_code == 302 and response["Location"] == "/access/policies/ReadUsage/"
    created = Policy.objects.get(organization=ram_world.acme, name="ReadUsage")
    assert created.description == "Usage only" and created.document == json.loads(starter)
    audit = AuditLog.objects.get(action="policy.create", target_id=str(created.pk))
    assert audit.actor == ram_world.alice and audit.source_ip == "127.0.0.1"
    assert "Policy ReadUsage created." in _page(alice.get(response["Location"]))


def test_a_new_policys_name_is_checked_and_a_clash_is_reported_by_the_name(alice, ram_world):
    valid = json.dumps(_document({"Effect": "Allow", "Action": "usage:QueryUsage", "Resource": "*"}))
    body = _page(alice.post("/access/policies/new/", {"name": "has space", "document": valid}))
    assert 'data-testid="policy-name-errors"' in body
    body = _page(alice.post("/access/policies/new/", {"name": "ReadOnlyAccess", "document": valid}))
    assert "already exists" in body.split('data-testid="policy-name-errors"')[1].split("</span>")[0]
    assert not Policy.objects.filter(name="has space").exists()
    assert Policy.objects.filter(name="ReadOnlyAccess").count() == 1


def test_a_valid_edit_is_saved_and_audited(alice, ram_world):
    page = _page(alice.get("/access/policies/ResearchKeys/"))
    assert EDITOR in page and '"usage:DepartmentId"' in page.replace("&quot;", '"')
    document = _document({"Sid": "ResearchKeysOnly", "Effect": "Allow", "Action": ["keys:ListKeys", "keys:GetKey"],
                          "Resource": f"acs:keys:*:{ram_world.acme.pk}:apikey/*"})
    response = alice.post("/access/policies/ResearchKeys/", {"description": "Read keys",
                                                             "document": json.dumps(document, indent=2)})
    assert response.status_code == 302
    policy = Policy.objects.get(name="ResearchKeys")
    assert policy.document == document and policy.description == "Read keys"
    audit = AuditLog.objects.filter(action="policy.update", target_id=str(policy.pk)).get()
    assert audit.actor == ram_world.alice and audit.detail["document"] == document
    assert "Policy ResearchKeys saved." in _page(alice.get(response["Location"]))


def test_a_system_policy_is_read_only_no_editor_and_a_post_is_refused(alice, ram_world):
    body = _page(alice.get("/access/policies/AdministratorAccess/"))
    assert EDITOR not in body and 'data-testid="policy-form"' not in body and 'data-testid="policy-delete"' not in body
    assert 'data-testid="policy-document"' in body and "Copy into a new policy" in body
    before = Policy.objects.get(name="AdministratorAccess").document
    audits = AuditLog.objects.count()
    response = alice.post("/access/policies/AdministratorAccess/", {
        "document": json.dumps(_document({"Effect": "Deny", "Action": "*", "Resource": "*"}))})
    assert response.status_code == 400
    assert "cannot be changed" in _page(response).split(ERRORS)[1]
    assert Policy.objects.get(name="AdministratorAccess").document == before and AuditLog.objects.count() == audits


def test_copying_a_system_policy_prefills_a_new_custom_one(alice, ram_world):
    body = _page(alice.get("/access/policies/new/", {"from": "KeyManagerAccess"}))
    assert 'value="KeyManagerAccessCopy"' in body and "keys:RotateKey" in body


def test_a_member_who_may_read_but_not_update_sees_no_editor_and_is_refused(client, ram_world):
    attach(ram_world.amir, "ReadOnlyAccess")
    client.force_login(ram_world.amir.user)
    body = _page(client.get("/access/policies/ResearchKeys/"))
    assert EDITOR not in body and 'data-testid="policy-document"' in body and 'data-testid="policy-delete"' not in body
    response = client.post("/access/policies/ResearchKeys/", {"document": "{}"})
    assert response.status_code == 403 and "ram:UpdatePolicy" in _page(response)


def test_a_custom_policy_is_deleted_after_confirmation_and_a_system_one_is_not(alice, ram_world):
    body = _page(alice.get("/access/policies/ResearchKeys/"))
    delete_form = body.split('action="/access/policies/ResearchKeys/delete/"')[1].split("</form>")[0]
    assert "data-confirm=" in delete_form and "csrfmiddlewaretoken" in delete_form
    response = alice.post("/access/policies/ResearchKeys/delete/")
    assert response.status_code == 302 and response["Location"] == "/access/"
    assert not Policy.objects.filter(name="ResearchKeys").exists()
    assert AuditLog.objects.filter(action="policy.delete", target_name="ResearchKeys").exists()
    response = alice.post("/access/policies/ReadOnlyAccess/delete/")
    assert response.status_code == 302 and Policy.objects.filter(name="ReadOnlyAccess").exists()
    assert "cannot be changed or deleted" in _page(alice.get(response["Location"]))


# --- attach and detach -------------------------------------------------------------------------------

def test_a_policy_is_attached_to_and_detached_from_a_member(alice, ram_world):
    policy = Policy.objects.get(name="ResearchKeys")
    body = _page(alice.get("/access/policies/ResearchKeys/"))
    assert "dora" in body.split('data-testid="policy-attachments"')[1].split("</table>")[0]
    response = alice.post("/access/policies/ResearchKeys/attach/", {"member": str(ram_world.bob.uuid)})
    assert response.status_code == 302 and response["Location"] == "/access/policies/ResearchKeys/"
    assert PolicyAttachment.objects.filter(policy=policy, member=ram_world.bob).exists()
    assert AuditLog.objects.filter(action="policy.attach", detail__member=str(ram_world.bob.uuid)).exists()
    assert "bob" in _page(alice.get(response["Location"])).split('data-testid="policy-attachments"')[1]

    response = alice.post("/access/policies/ResearchKeys/detach/", {"member": str(ram_world.bob.uuid)})
    assert response.status_code == 302
    assert not PolicyAttachment.objects.filter(policy=policy, member=ram_world.bob).exists()
    assert AuditLog.objects.filter(action="policy.detach", detail__member=str(ram_world.bob.uuid)).exists()


def test_a_system_policy_is_attached_to_and_detached_from_a_group(alice, ram_world):
    group = create_group(actor=SYSTEM, organization=ram_world.acme, name="Finance", members=[ram_world.bob])
    alice.post("/access/policies/BillingFullAccess/attach/", {"group": str(group.uuid)})
    assert PolicyAttachment.objects.filter(policy__name="BillingFullAccess", group=group).exists()
    alice.post("/access/policies/BillingFullAccess/detach/", {"group": str(group.uuid)})
    assert not PolicyAttachment.objects.filter(policy__name="BillingFullAccess", group=group).exists()


@pytest.mark.parametrize("principals", ["both", "neither", "foreign"])
def test_attaching_needs_exactly_one_member_or_group_of_the_organization(alice, ram_world, principals):
    group = create_group(actor=SYSTEM, organization=ram_world.acme, name="Finance")
    data = {"both": {"member": str(ram_world.bob.uuid), "group": str(group.uuid)},
            "neither": {},
            "foreign": {"member": str(ram_world.charlie.uuid)}}[principals]
    attachments = PolicyAttachment.objects.count()
    response = alice.post("/access/policies/ResearchKeys/attach/", data)
    assert response.status_code == 302
    assert PolicyAttachment.objects.count() == attachments
    assert 'class="message error' in _page(alice.get(response["Location"]))


def test_attaching_is_decided_as_ram_attach_policy(client, ram_world):
    attach(ram_world.amir, "ReadOnlyAccess")
    client.force_login(ram_world.amir.user)
    body = _page(client.get("/access/policies/ResearchKeys/"))
    assert "/attach/" not in body and "/detach/" not in body
    response = client.post("/access/policies/ResearchKeys/attach/", {"member": str(ram_world.amir.uuid)})
    assert response.status_code == 403 and "ram:AttachPolicy" in _page(response)
    response = client.post("/access/policies/ResearchKeys/detach/", {"member": str(ram_world.dora.uuid)})
    assert response.status_code == 403 and "ram:DetachPolicy" in _page(response)
    assert PolicyAttachment.objects.filter(policy__name="ResearchKeys", member=ram_world.dora).exists()


# --- the simulator -------------------------------------------------------------------------------------

@pytest.fixture
def amir_denied_deletes(ram_world):
    """amir is an administrator by policy, with one explicit Deny on top."""
    no_deletes = ram.create_policy(actor=SYSTEM, organization=ram_world.acme, name="NoDeletes", document=_document(
        {"Sid": "NeverDelete", "Effect": "Deny", "Action": "keys:DeleteKey", "Resource": "*"}))
    ram.attach_policy(actor=SYSTEM, policy=no_deletes, member=ram_world.amir)
    attach(ram_world.amir, "AdministratorAccess")
    return ram_world


def _simulate(client, **fields) -> tuple[str, list[str], str]:
    body = _page(client.get("/access/simulate/", fields))
    decision = body.split('data-testid="simulate-decision">')[1].split("<")[0]
    statements = [row.split("</tr>")[0].split("</p>")[0] for row in body.split('data-testid="simulate-statement"')[1:]]
    return decision, statements, body


CASES = [
    pytest.param("dora", "keys:CreateKey", "", "research", "Allow", "ResearchKeys", id="allow-in-her-department"),
    pytest.param("dora", "keys:CreateKey", "", "support", "ImplicitDeny", None, id="implicit-deny-elsewhere"),
    pytest.param("amir", "keys:DeleteKey", "apikey/17", None, "ExplicitDeny", "NoDeletes", id="explicit-deny"),
    pytest.param("amir", "keys:CreateKey", "", None, "Allow", "AdministratorAccess", id="admin-allows-the-rest"),
    pytest.param("bob", "usage:QueryUsage", "", None, "Allow", "UsageReadOnlyAccess", id="bob-reads-usage"),
    pytest.param("bob", "ram:ListPolicies", "", None, "ImplicitDeny", None, id="bob-no-ram"),
]


@pytest.mark.parametrize(("who", "action", "resource", "department", "expected", "deciding"), CASES)
def test_the_simulator_decides_as_ram_authorize(alice, amir_denied_deletes, rf, who, action, resource, department,
                                                expected, deciding):
    world = amir_denied_deletes
    member = getattr(world, who)
    fields = {"member": str(member.uuid), "action": action}
    registered = get_action(action)
    full_resource = registered.resource(world.acme.pk, resource.split("/")[1]) if resource else registered.resource(
        world.acme.pk)
    if resource:
        fields["resource"] = full_resource
    context = request_context(rf.get("/"))
    if department:
        fields["department"] = str(getattr(world, department).uuid)
        context["usage:DepartmentId"] = str(getattr(world, department).pk)

    decision, statements, body = _simulate(alice, **fields)

    truth = ram.authorize(member=member, action=registered, resource=full_resource, context=context)
    assert decision == truth.effect == expected
    assert f"<code>{full_resource}</code>" in body  # the resource decided on (the action's own by default)
    if deciding is None:
        assert len(statements) == 1 and "No statement applies" in statements[0]
    else:
        assert [m.policy for m in truth.matched] == [deciding]
        assert deciding in statements[0] and f"Statement[{truth.matched[0].index}]" in statements[0]
    if expected == "ExplicitDeny":
        assert "NeverDelete" in statements[0] and "Deny" in statements[0]


def test_the_simulators_source_ip_is_a_condition_like_any_other(alice, ram_world):
    office = ram.create_policy(actor=SYSTEM, organization=ram_world.acme, name="OfficeOnly", document=_document(
        {"Effect": "Allow", "Action": "usage:GetDashboard", "Resource": "*",
         "Condition": {"IpAddress": {"acs:SourceIp": "10.8.0.0/16"}}}))
    ram.attach_policy(actor=SYSTEM, policy=office, member=ram_world.dora)
    asked = {"member": str(ram_world.dora.uuid), "action": "usage:GetDashboard"}
    assert _simulate(alice, **asked, source_ip="10.8.3.4")[0] == "Allow"
    assert _simulate(alice, **asked, source_ip="192.0.2.1")[0] == "ImplicitDeny"
    assert _simulate(alice, **asked)[0] == "ImplicitDeny"  # the visitor's own address, 127.0.0.1


def test_the_simulator_form_lists_the_registered_actions_and_refuses_an_unknown_one(alice, ram_world):
    body = _page(alice.get("/access/simulate/", {"member": str(ram_world.bob.uuid)}))
    assert 'data-testid="simulate-decision"' not in body
    assert f'<option value="{ram_world.bob.uuid}" selected>' in body  # preselected from the members table
    assert 'value="keys:RotateKey"' in body and 'value="usage:IngestEvents"' not in body  # platform-only
    assert f'data-resource="acs:ram:*:{ram_world.acme.pk}:policy/*"' in body
    body = _page(alice.get("/access/simulate/", {"member": str(ram_world.bob.uuid), "action": "keys:Teleport"}))
    assert 'data-testid="simulate-decision"' not in body and "keys:Teleport" in body


def test_the_simulator_is_decided_as_ram_simulate_policy(client, ram_world):
    client.force_login(ram_world.bob.user)
    response = client.get("/access/simulate/")
    assert response.status_code == 403 and "ram:SimulatePolicy" in _page(response)


def test_anonymous_visitors_are_sent_to_login(client, ram_world):
    for url in ("/access/", "/access/policies/new/", "/access/policies/ResearchKeys/", "/access/simulate/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_a_member_with_no_policy_at_all_is_told_on_the_members_table(alice, ram_world):
    factories.make_member(ram_world.acme, "newcomer")
    body = _page(alice.get("/access/")).split('data-testid="members-table"')[1].split("</table>")[0]
    assert "None: every request is denied" in body.split("newcomer")[1].split("</tr>")[0]
