"""The API key pages (API.md §11): alice manages Acme's keys, dora only Research's, bob may not
create any, charlie (Globex) never sees one of Acme's. Secrets are shown once."""

import re
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from billing.budgets import budget_exhausted
from keys.models import InferenceKey, KeyStatus
from keys.services import verify_inference_key
from portal.models import AuditLog
from tests import factories

pytestmark = pytest.mark.django_db


def secret_on(page: str) -> str | None:
    found = re.search(r'data-testid="new-secret">([^<]*)<', page)
    return found.group(1) if found else None


def verifies(secret: str) -> bool:
    return verify_inference_key(secret, budget_exhausted=budget_exhausted)["valid"]


def new_key_form(department, **fields) -> dict:
    form = {"name": "Chatbot", "department": str(department.uuid), "owner": "", "rpm_limit": "", "tpm_limit": "",
            "allowed_ips": "", "expires_at": ""}
    form.update(fields)
    return form


@pytest.fixture
def catalog(db):
    return factories.make_model("qwen-plus"), factories.make_model("qwen-max")


# --- the list ------------------------------------------------------------------------------------

def test_the_list_shows_each_key_with_status_department_owner_prefix_and_limits(client, world):
    key, _ = factories.make_inference_key(world.research, owner=world.bob, name="Research bot", rpm_limit=120,
                                          tpm_limit=50_000)
    disabled, _ = factories.make_inference_key(world.support, name="Old support bot")
    InferenceKey.objects.filter(pk=disabled.pk).update(status=KeyStatus.DISABLED)
    client.force_login(world.alice.user)
    page = client.get("/keys/").content.decode()
    assert 'data-testid="keys-table"' in page and 'data-testid="new-key"' in page
    row = page.split(f'data-key="{key.uuid}"')[1].split("</tr>")[0]
    for shown in ("Research bot", "Active", "Research", "bob", key.key_prefix, "120", "50,000", "never"):
        assert shown in row, shown
    assert "Disabled" in page.split(f'data-key="{disabled.uuid}"')[1].split("</tr>")[0]


def test_the_list_is_narrowed_to_the_departments_dora_may_list(client, ram_world):
    research, _ = factories.make_inference_key(ram_world.research, name="Research bot")
    support, _ = factories.make_inference_key(ram_world.support, name="Support bot")
    client.force_login(ram_world.dora.user)
    page = client.get("/keys/").content.decode()
    assert str(research.uuid) in page and str(support.uuid) not in page
    assert client.get(f"/keys/{support.uuid}/").status_code == 403


def test_filters_and_pages(client, world):
    for n in range(27):
        factories.make_inference_key(world.research, name=f"bulk {n:02d}")
    factories.make_inference_key(world.support, name="the support key")
    client.force_login(world.alice.user)
    first = client.get("/keys/").content.decode()
    assert first.count("data-key=") == 25 and 'rel="next"' in first
    second = client.get("/keys/?page=2").content.decode()
    assert second.count("data-key=") == 3
    research_only = client.get(f"/keys/?team={world.research.uuid}&page=2").content.decode()
    assert research_only.count("data-key=") == 2 and "the support key" not in research_only
    assert "the support key" not in client.get("/keys/?status=disabled").content.decode()


def test_an_empty_list_says_what_to_do_next(client, world):
    client.force_login(world.alice.user)
    page = client.get("/keys/").content.decode()
    assert 'data-testid="keys-empty"' in page and "No API keys yet." in page and 'href="/keys/new/"' in page
    assert 'data-testid="keys-table"' not in page


def test_charlie_sees_none_of_acmes_keys_and_their_urls_are_404_for_him(client, world):
    key, _ = factories.make_inference_key(world.research, name="Acme secret project")
    client.force_login(world.charlie.user)
    assert "Acme secret project" not in client.get("/keys/").content.decode()
    assert client.get(f"/keys/{key.uuid}/").status_code == 404
    for operation in ("edit", "rotate", "disable", "enable", "delete"):
        assert client.post(f"/keys/{key.uuid}/{operation}/").status_code == 404, operation
    key.refresh_from_db()
    assert key.status == KeyStatus.ACTIVE and key.deleted_at is None
    assert not AuditLog.objects.filter(action__startswith="inference_key.", actor=world.charlie).exists()


# --- creating a key ------------------------------------------------------------------------------

def test_alice_creates_a_key_and_sees_its_secret_once(client, world, catalog):
    client.force_login(world.alice.user)
    form = client.get("/keys/new/").content.decode()
    assert 'data-testid="create-key"' in form and "qwen-plus" in form and "Support" in form
    response = client.post("/keys/new/", new_key_form(
        world.research, name="Chatbot", owner=str(world.bob.uuid), rpm_limit="60", tpm_limit="10000",
        models_allowed=["qwen-plus"], allowed_ips="10.0.0.0/8\n\n 192.0.2.7 \n", expires_at="2099-01-01T08:00",
        is_sandbox="on"))
    key = InferenceKey.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.uuid}/"
    assert (key.name, key.department, key.owner, key.rpm_limit, key.tpm_limit, key.is_sandbox) == (
        "Chatbot", world.research, world.bob, 60, 10000, True)
    assert key.models_allowed == ["qwen-plus"] and key.allowed_ips == ["10.0.0.0/8", "192.0.2.7"]
    # The date and time were the organization's (Asia/Shanghai, UTC+8).
    assert key.expires_at == datetime(2099, 1, 1, 0, 0, tzinfo=UTC)

    shown = client.get(response["Location"])
    secret = secret_on(shown.content.decode())
    assert secret and secret.startswith("sk-") and verifies(secret)
    assert 'data-testid="copy-secret"' in shown.content.decode() and 'data-copy="new-secret"' in shown.content.decode()
    assert "will not be shown again" in shown.content.decode()
    assert "no-store" in shown["Cache-Control"]
    assert secret not in response["Location"] and secret not in str(list(shown.context["messages"]))

    again = client.get(response["Location"]).content.decode()
    assert secret_on(again) is None and secret not in again
    assert AuditLog.objects.filter(action="inference_key.create", target_id=str(key.pk), actor=world.alice,
                                   source_ip="127.0.0.1").exists()


def test_the_owner_defaults_to_the_member_who_creates_the_key(client, world):
    client.force_login(world.alice.user)
    client.post("/keys/new/", new_key_form(world.support))
    assert InferenceKey.objects.get().owner == world.alice


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"allowed_ips": "10.0.0.0/8\n10.0.0.300/8"}, "allowed_ips", "is not an IP address or CIDR"),
    ({"models_allowed": ["no-such-model"]}, "models_allowed", "no-such-model"),
    ({"rpm_limit": "-5"}, "rpm_limit", "greater than or equal to 1"),
    ({"tpm_limit": "0"}, "tpm_limit", "greater than or equal to 1"),
    ({"name": ""}, "name", "required"),
    ({"expires_at": "2001-01-01T00:00"}, "expires_at", "must be in the future"),
], ids=["bad-cidr", "unknown-model", "negative-rpm", "zero-tpm", "no-name", "expiry-in-the-past"])
def test_a_rejected_key_stores_nothing_and_says_why_beside_the_field(client, world, catalog, fields, field, message):
    client.force_login(world.alice.user)
    response = client.post("/keys/new/", new_key_form(world.research, **fields))
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert message in response.content.decode()
    assert not InferenceKey.objects.exists()
    assert not AuditLog.objects.filter(action="inference_key.create").exists()


def test_a_disabled_model_is_refused_by_the_apis_own_rule(client, world, catalog):
    qwen_plus, _ = catalog
    client.force_login(world.alice.user)
    form = new_key_form(world.research, models_allowed=["qwen-plus"])
    qwen_plus.enabled = False
    qwen_plus.save()
    response = client.post("/keys/new/", form)
    assert "qwen-plus" in " ".join(response.context["form"].errors["models_allowed"])
    assert not InferenceKey.objects.exists()


def test_bob_is_refused_the_new_key_page_with_the_action_named(client, ram_world):
    client.force_login(ram_world.bob.user)
    for response in (client.get("/keys/new/"), client.post("/keys/new/", new_key_form(ram_world.research))):
        assert response.status_code == 403
        assert b'data-testid="denied-action">keys:CreateKey<' in response.content
    assert not InferenceKey.objects.exists()


def test_dora_creates_keys_in_research_only_decided_before_the_form_is_judged(client, ram_world):
    client.force_login(ram_world.dora.user)
    form = client.get("/keys/new/").content.decode()
    assert str(ram_world.research.uuid) in form and str(ram_world.support.uuid) not in form
    # Support is decided on first: a 403, even though the form is invalid too.
    refused = client.post("/keys/new/", new_key_form(ram_world.support, rpm_limit="-1"))
    assert refused.status_code == 403 and b"keys:CreateKey" in refused.content
    created = client.post("/keys/new/", new_key_form(ram_world.research))
    assert created.status_code == 302
    assert list(InferenceKey.objects.values_list("department", flat=True)) == [ram_world.research.pk]


def test_a_department_of_another_organization_is_not_a_choice(client, world):
    client.force_login(world.alice.user)
    response = client.post("/keys/new/", new_key_form(world.sales))
    assert response.status_code == 200 and response.context["form"].errors["department"]
    assert not InferenceKey.objects.exists()


# --- one key -------------------------------------------------------------------------------------

def test_the_key_page_shows_everything_and_the_keys_usage(client, world, catalog):
    from usage.services import ingest_events

    key, _ = factories.make_inference_key(world.research, name="Chatbot", models_allowed=["qwen-max"],
                                          allowed_ips=["10.0.0.0/8"], rpm_limit=30)
    other, _ = factories.make_inference_key(world.research, name="Other")
    ingest_events([factories.event(key, catalog[1], timestamp=timezone.now().isoformat()),
                   factories.event(key, catalog[1], timestamp=timezone.now().isoformat(), status_code=500),
                   factories.event(other, catalog[1], timestamp=timezone.now().isoformat())])
    client.force_login(world.alice.user)
    response = client.get(f"/keys/{key.uuid}/")
    page = response.content.decode()
    assert 'data-testid="key-status" data-status="active"' in page
    for shown in ("Chatbot", "Research", key.key_prefix, "qwen-max", "10.0.0.0/8", str(key.uuid)):
        assert shown in page, shown
    usage = response.context["usage"]
    assert (usage.requests, usage.errors, usage.total_tokens) == (2, 1, 3000)
    assert 'data-testid="key-usage"' in page
    assert secret_on(page) is None
    for control in ("rotate-key", "disable-key", "delete-key", "save-key"):
        assert f'data-testid="{control}"' in page
    assert 'data-testid="enable-key"' not in page


def test_a_member_who_may_only_read_keys_is_offered_no_controls(client, world):
    from portal.ram import services as ram
    from portal.services import SYSTEM

    reader = ram.create_policy(actor=SYSTEM, organization=world.acme, name="KeyReader", document={
        "Version": "1", "Statement": [{"Effect": "Allow", "Action": ["keys:ListKeys", "keys:GetKey"],
                                       "Resource": "*"}]})
    ram.attach_policy(actor=SYSTEM, policy=reader, member=world.bob)
    key, _ = factories.make_inference_key(world.research)
    client.force_login(world.bob.user)
    page = client.get(f"/keys/{key.uuid}/").content.decode()
    assert 'data-testid="key-status"' in page
    assert not re.search(r'data-testid="(rotate|disable|enable|delete|save)-key"', page)
    assert 'data-testid="key-usage"' not in page  # no usage:QueryUsage either
    assert 'data-testid="new-key"' not in client.get("/keys/").content.decode()
    refused = client.post(f"/keys/{key.uuid}/disable/")
    assert refused.status_code == 403 and b"keys:DisableKey" in refused.content


def test_rotating_shows_the_new_secret_once_and_the_old_one_works_through_the_grace(client, world):
    key, old_secret = factories.make_inference_key(world.research)
    client.force_login(world.alice.user)
    response = client.post(f"/keys/{key.uuid}/rotate/", {"rotate-grace_hours": "2"})
    assert response.status_code == 302 and response["Location"] == f"/keys/{key.uuid}/"
    page = client.get(response["Location"]).content.decode()
    new_secret = secret_on(page)
    assert new_secret and new_secret != old_secret and verifies(new_secret) and verifies(old_secret)
    key.refresh_from_db()
    assert abs((key.rotate_grace_until - timezone.now()).total_seconds() - 7200) < 60
    assert "keeps working until" in page
    assert secret_on(client.get(response["Location"]).content.decode()) is None
    entry = AuditLog.objects.get(action="inference_key.rotate", target_id=str(key.pk))
    assert entry.actor == world.alice and entry.detail["grace_seconds"] == 7200


def test_rotating_without_grace_retires_the_old_secret_at_once(client, world):
    key, old_secret = factories.make_inference_key(world.research)
    client.force_login(world.alice.user)
    client.post(f"/keys/{key.uuid}/rotate/", {"rotate-grace_hours": "0"})
    assert not verifies(old_secret)


def test_a_grace_period_beyond_the_apis_limit_is_refused(client, world):
    key, old_secret = factories.make_inference_key(world.research)
    client.force_login(world.alice.user)
    response = client.post(f"/keys/{key.uuid}/rotate/", {"rotate-grace_hours": "169"})
    assert response.status_code == 200 and "less than or equal to 168" in response.content.decode()
    key.refresh_from_db()
    assert key.rotate_grace_until is None and verifies(old_secret)
    assert not AuditLog.objects.filter(action="inference_key.rotate").exists()


def test_disable_then_enable(client, world):
    key, secret = factories.make_inference_key(world.research)
    client.force_login(world.alice.user)
    assert client.post(f"/keys/{key.uuid}/disable/").status_code == 302
    page = client.get(f"/keys/{key.uuid}/").content.decode()
    assert 'data-status="disabled"' in page and 'data-testid="enable-key"' in page
    assert 'data-testid="disable-key"' not in page
    assert not verifies(secret)
    assert client.post(f"/keys/{key.uuid}/enable/").status_code == 302
    assert 'data-status="active"' in client.get(f"/keys/{key.uuid}/").content.decode()
    assert verifies(secret)
    actions = list(AuditLog.objects.filter(target_id=str(key.pk), actor=world.alice)
                   .order_by("pk").values_list("action", flat=True))
    assert actions == ["inference_key.disable", "inference_key.enable"]


def test_delete_removes_the_key_from_the_pages(client, world):
    key, secret = factories.make_inference_key(world.research, name="Doomed")
    client.force_login(world.alice.user)
    detail = client.get(f"/keys/{key.uuid}/").content.decode()
    assert re.search(r'action="/keys/[^"]+/delete/"\s+data-confirm="[^"]*Doomed', detail)
    response = client.post(f"/keys/{key.uuid}/delete/")
    assert response.status_code == 302 and response["Location"] == "/keys/"
    assert "Doomed" in client.get("/keys/").content.decode()  # the message, not a row
    assert f'data-key="{key.uuid}"' not in client.get("/keys/").content.decode()
    assert client.get(f"/keys/{key.uuid}/").status_code == 404
    assert not verifies(secret)
    assert AuditLog.objects.filter(action="inference_key.delete", target_id=str(key.pk), actor=world.alice).exists()


def test_operations_are_post_only(client, world):
    key, _ = factories.make_inference_key(world.research)
    client.force_login(world.alice.user)
    for operation in ("edit", "rotate", "disable", "enable", "delete"):
        assert client.get(f"/keys/{key.uuid}/{operation}/").status_code == 405, operation


def test_editing_limits_models_and_addresses(client, world, catalog):
    key, _ = factories.make_inference_key(world.research, name="Chatbot", rpm_limit=10)
    client.force_login(world.alice.user)
    response = client.post(f"/keys/{key.uuid}/edit/", {
        "limits-name": "Chatbot", "limits-rpm_limit": "", "limits-tpm_limit": "2000",
        "limits-models_allowed": ["qwen-plus", "qwen-max"], "limits-allowed_ips": "2001:db8::/32\n"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert (key.rpm_limit, key.tpm_limit, key.models_allowed, key.allowed_ips) == (
        None, 2000, ["qwen-plus", "qwen-max"], ["2001:db8::/32"])
    entry = AuditLog.objects.get(action="inference_key.update", target_id=str(key.pk))
    assert entry.detail["fields"] == ["allowed_ips", "models_allowed", "rpm_limit", "tpm_limit"]


def test_an_invalid_edit_changes_nothing_and_shows_why(client, world):
    key, _ = factories.make_inference_key(world.research, name="Chatbot", rpm_limit=10, allowed_ips=["10.0.0.0/8"])
    client.force_login(world.alice.user)
    response = client.post(f"/keys/{key.uuid}/edit/", {
        "limits-name": "Renamed", "limits-rpm_limit": "-3", "limits-allowed_ips": "not-an-address"})
    assert response.status_code == 200
    errors = response.context["limits"].errors
    assert "greater than or equal to 1" in " ".join(errors["rpm_limit"])
    assert "not-an-address" in " ".join(errors["allowed_ips"])
    key.refresh_from_db()
    assert (key.name, key.rpm_limit, key.allowed_ips) == ("Chatbot", 10, ["10.0.0.0/8"])
    assert not AuditLog.objects.filter(action="inference_key.update").exists()


def test_dora_manages_research_keys_but_not_supports(client, ram_world):
    research, _ = factories.make_inference_key(ram_world.research)
    support, _ = factories.make_inference_key(ram_world.support)
    client.force_login(ram_world.dora.user)
    assert client.post(f"/keys/{research.uuid}/disable/").status_code == 302
    refused = client.post(f"/keys/{support.uuid}/disable/")
    assert refused.status_code == 403 and b"keys:DisableKey" in refused.content
    support.refresh_from_db()
    assert support.status == KeyStatus.ACTIVE


def test_anonymous_visitors_are_sent_to_login(client, world):
    key, _ = factories.make_inference_key(world.research)
    for url in ("/keys/", "/keys/new/", f"/keys/{key.uuid}/"):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
