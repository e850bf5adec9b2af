"""Inference keys in the admin: alice issues one through keys.services (audited, the secret shown
once), edits its models and addresses as lists, and disables, enables and rotates keys in bulk;
nothing she does reaches Globex's key."""

import pytest
from django.urls import reverse

from billing.models import Model
from keys.hashing import hash_secret
from keys.models import InferenceKey, KeyStatus
from portal.models import AuditLog

ADD = "admin:keys_inferencekey_add"


def _new_key(**fields):
    form = {"name": "batch-jobs", "models_allowed": ["qwen-plus"], "allowed_ips": "10.0.0.0/8\n2001:db8::/32\n",
            "rpm_limit": "60", "tpm_limit": "", "expires_at_0": "", "expires_at_1": ""}
    form.update(fields)
    return form


def test_an_org_admin_issues_a_key_and_sees_its_secret_once(client, world, books):
    client.force_login(world.alice.user)
    form = _new_key(department=world.research.pk)
    response = client.post(reverse(ADD), form)
    assert response.status_code == 200, response.content.decode()[:3000]
    assert "no-cache" in response["Cache-Control"]
    key = InferenceKey.objects.get(name="batch-jobs")
    secret = response.context["issued"][0].secret
    assert secret in response.content.decode() and hash_secret(secret) == key.secret_hash
    assert (key.organization, key.department, key.owner) == (world.acme, world.research, world.alice)
    assert key.models_allowed == ["qwen-plus"] and key.allowed_ips == ["10.0.0.0/8", "2001:db8::/32"]
    assert key.rpm_limit == 60 and key.tpm_limit is None
    entry = AuditLog.objects.get(action="inference_key.create", target_id=str(key.pk))
    assert (entry.organization, entry.actor, entry.actor_label) == (world.acme, world.alice, "alice")
    # Never again: the key's own page shows the prefix only.
    page = client.get(reverse("admin:keys_inferencekey_change", args=[key.pk])).content.decode()
    assert key.key_prefix in page and secret not in page


def test_the_add_form_offers_the_catalogs_enabled_models_and_the_admins_departments(client, world, books):
    Model.objects.filter(code="deepseek-v3").update(enabled=False)
    client.force_login(world.alice.user)
    body = client.get(reverse(ADD)).content.decode()
    assert 'value="qwen-plus"' in body and 'value="deepseek-v3"' not in body
    assert "<select" in body and 'name="models_allowed"' in body and "multiple" in body
    assert "Research" in body and "Sales" not in body


@pytest.mark.parametrize("fields, field, message", [
    ({"allowed_ips": "10.0.0.0/8\nnot-an-ip\n300.1.1.1"}, "allowed_ips", "not-an-ip is not an IP address"),
    ({"models_allowed": ["no-such-model"]}, "models_allowed", "no-such-model is not one of the available choices"),
    ({"rpm_limit": "0"}, "rpm_limit", "greater than or equal to 1"),
    ({"expires_at_0": "2020-01-01", "expires_at_1": "00:00"}, "expires_at", "must be in the future"),
], ids=["bad-ip", "unknown-model", "zero-limit", "past-expiry"])
def test_a_bad_key_form_is_refused_with_the_reason_and_nothing_is_stored(client, world, books, fields, field,
                                                                         message):
    client.force_login(world.alice.user)
    response = client.post(reverse(ADD), _new_key(department=world.research.pk, **fields))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert message in response.content.decode()
    assert not InferenceKey.objects.filter(name="batch-jobs").exists()


def test_a_key_cannot_be_issued_in_another_organizations_department(client, world, books):
    client.force_login(world.alice.user)
    response = client.post(reverse(ADD), _new_key(department=world.sales.pk))
    assert "department" in response.context["adminform"].form.errors
    assert not InferenceKey.objects.filter(name="batch-jobs").exists()


def test_a_plain_member_cannot_issue_keys_in_the_admin(client, world, books):
    client.force_login(world.bob.user)
    response = client.post(reverse(ADD), _new_key(department=world.research.pk))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not InferenceKey.objects.filter(name="batch-jobs").exists()


def test_editing_a_keys_lists_goes_through_the_service(client, world, books):
    key = books.acme_key
    client.force_login(world.alice.user)
    url = reverse("admin:keys_inferencekey_change", args=[key.pk])
    page = client.get(url).content.decode()
    assert 'name="allowed_ips"' in page and "<textarea" in page
    response = client.post(url, {"name": "renamed", "models_allowed": ["qwen-plus", "deepseek-v3"],
                                 "allowed_ips": "192.0.2.7\n", "rpm_limit": "", "tpm_limit": "1000"})
    assert response.status_code == 302, response.content.decode()[:3000]
    key.refresh_from_db()
    assert (key.name, key.models_allowed, key.allowed_ips, key.tpm_limit) == (
        "renamed", ["qwen-plus", "deepseek-v3"], ["192.0.2.7"], 1000)
    entry = AuditLog.objects.get(action="inference_key.update", target_id=str(key.pk))
    assert entry.actor == world.alice and entry.detail["fields"] == ["allowed_ips", "models_allowed", "name",
                                                                      "tpm_limit"]


def test_a_departments_allowed_models_are_chosen_from_the_catalog(client, world, books):
    client.force_login(world.alice.user)
    url = reverse("admin:portal_department_change", args=[world.research.pk])
    assert 'value="qwen-plus"' in client.get(url).content.decode()
    response = client.post(url, {"name": "Research", "discount": "1", "allowed_models": ["qwen-plus"]})
    assert response.status_code == 302, response.content.decode()[:3000]
    world.research.refresh_from_db()
    assert world.research.allowed_models == ["qwen-plus"]
    refused = client.post(url, {"name": "Research", "discount": "1", "allowed_models": ["gpt-9"]})
    assert refused.status_code == 200 and "allowed_models" in refused.context["adminform"].form.errors


def _act(client, action, *keys):
    return client.post(reverse("admin:keys_inferencekey_changelist"),
                       {"action": action, "_selected_action": [key.pk for key in keys], "index": "0"})


def test_keys_are_disabled_and_enabled_in_bulk_through_the_service(client, world, books):
    client.force_login(world.alice.user)
    response = _act(client, "disable_keys", books.acme_key, books.globex_key)
    assert response.status_code == 302
    books.acme_key.refresh_from_db()
    books.globex_key.refresh_from_db()
    assert books.acme_key.status == KeyStatus.DISABLED
    assert books.globex_key.status == KeyStatus.ACTIVE  # not in alice's changelist, so never selected
    assert AuditLog.objects.filter(action="inference_key.disable", actor=world.alice).count() == 1
    _act(client, "enable_keys", books.acme_key)
    books.acme_key.refresh_from_db()
    assert books.acme_key.status == KeyStatus.ACTIVE
    assert AuditLog.objects.filter(action="inference_key.enable", target_id=str(books.acme_key.pk)).exists()


def test_rotating_keys_shows_each_new_secret_once_and_keeps_the_old_one_for_a_grace(client, world, books):
    client.force_login(world.alice.user)
    old_hash = books.acme_key.secret_hash
    response = _act(client, "rotate_keys", books.acme_key, books.globex_key)
    assert response.status_code == 200 and "no-cache" in response["Cache-Control"]
    issued = response.context["issued"]
    assert [one.key.pk for one in issued] == [books.acme_key.pk]
    books.acme_key.refresh_from_db()
    assert hash_secret(issued[0].secret) == books.acme_key.secret_hash != old_hash
    assert books.acme_key.previous_secret_hash == old_hash and books.acme_key.rotate_grace_until
    assert issued[0].secret in response.content.decode()
    assert AuditLog.objects.filter(action="inference_key.rotate", actor=world.alice).count() == 1


def test_deleting_a_key_in_the_admin_keeps_its_row(client, world, books):
    client.force_login(world.alice.user)
    response = client.post(reverse("admin:keys_inferencekey_delete", args=[books.acme_key.pk]), {"post": "yes"})
    assert response.status_code == 302
    books.acme_key.refresh_from_db()
    assert books.acme_key.status == KeyStatus.REVOKED and books.acme_key.deleted_at is not None
    assert AuditLog.objects.filter(action="inference_key.delete", target_id=str(books.acme_key.pk)).exists()
