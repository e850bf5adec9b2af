"""The Django admin is tenant-scoped: an org admin sees and edits only their organization."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from portal.models import Department
from tests import factories


@pytest.fixture
def acme_world(world):
    model = factories.make_model("qwen-plus")
    acme_key, acme_secret = factories.make_inference_key(world.research, name="acme-secret-app")
    globex_key, _ = factories.make_inference_key(world.sales, name="globex-secret-app")
    return world, model, acme_key, acme_secret, globex_key


def _login(client, member):
    client.force_login(member.user)
    return client


ADMIN_LISTS = [
    ("portal", "department"), ("portal", "member"), ("portal", "group"), ("portal", "organization"),
    ("portal", "auditlog"), ("portal", "policy"), ("portal", "policyattachment"), ("keys", "inferencekey"),
    ("keys", "managementkey"), ("billing", "invoice"),
    ("billing", "billingaccount"), ("billing", "subscription"), ("usage", "usageevent"),
]


@pytest.mark.parametrize("app, model", ADMIN_LISTS, ids=[f"{a}.{m}" for a, m in ADMIN_LISTS])
def test_org_admin_lists_show_only_their_organization(client, acme_world, app, model):
    world, *_ = acme_world
    response = _login(client, world.alice).get(reverse(f"admin:{app}_{model}_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Globex" not in body and "globex-secret-app" not in body and "Sales" not in body
    assert "charlie" not in body


def test_org_admin_sees_their_own_rows(client, acme_world):
    world, *_ = acme_world
    body = _login(client, world.amir).get(reverse("admin:portal_department_changelist")).content.decode()
    assert "Research" in body and "Support" in body
    body = client.get(reverse("admin:keys_inferencekey_changelist")).content.decode()
    assert "acme-secret-app" in body


def test_org_admin_cannot_open_another_organizations_object(client, acme_world):
    world, model, acme_key, acme_secret, globex_key = acme_world
    _login(client, world.alice)
    for url in (
        reverse("admin:portal_department_change", args=[world.sales.pk]),
        reverse("admin:portal_member_change", args=[world.charlie.pk]),
        reverse("admin:portal_organization_change", args=[world.globex.pk]),
        reverse("admin:keys_inferencekey_change", args=[globex_key.pk]),
        reverse("admin:portal_department_delete", args=[world.sales.pk]),
    ):
        response = client.get(url, follow=True)
        body = response.content.decode()
        assert "Sales" not in body and "globex-secret-app" not in body and "charlie" not in body, url
        assert response.redirect_chain, url  # sent back to the admin index: "does not exist"


def test_org_admin_cannot_change_another_organizations_object_by_post(client, acme_world):
    world, *_ = acme_world
    _login(client, world.alice).post(
        reverse("admin:portal_department_change", args=[world.sales.pk]),
        {"name": "Hijacked", "discount": "1", "allowed_models": "[]"},
    )
    world.sales.refresh_from_db()
    assert world.sales.name == "Sales"


def test_department_created_by_an_org_admin_belongs_to_their_organization(client, acme_world):
    world, *_ = acme_world
    response = _login(client, world.alice).post(
        reverse("admin:portal_department_add"),
        {"name": "Legal", "discount": "1", "organization": world.globex.pk},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Department.objects.get(name="Legal").organization == world.acme


def test_select_boxes_offer_only_the_admins_organization(client, acme_world):
    world, *_ = acme_world
    body = _login(client, world.alice).get(reverse("admin:portal_department_add")).content.decode()
    assert "Research" in body  # offered as a parent
    assert "Sales" not in body


def test_plain_members_have_no_admin_access(client, acme_world):
    world, *_ = acme_world
    response = _login(client, world.bob).get(reverse("admin:portal_department_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_platform_superuser_sees_every_organization(client, acme_world):
    world, *_ = acme_world
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(root)
    body = client.get(reverse("admin:portal_department_changelist")).content.decode()
    assert "Research" in body and "Sales" in body


def test_admin_pages_never_show_a_key_secret_or_its_hash(client, acme_world):
    world, model, acme_key, acme_secret, globex_key = acme_world
    _login(client, world.alice)
    for url in (reverse("admin:keys_inferencekey_changelist"),
                reverse("admin:keys_inferencekey_change", args=[acme_key.pk])):
        body = client.get(url).content.decode()
        assert acme_key.key_prefix in body
        assert acme_secret not in body and acme_key.secret_hash not in body


def test_org_admins_may_read_the_catalog_but_not_change_it(client, acme_world):
    world, model, *_ = acme_world
    _login(client, world.alice)
    assert client.get(reverse("admin:billing_model_changelist")).status_code == 200
    response = client.post(reverse("admin:billing_model_change", args=[model.pk]),
                           {"code": model.code, "name": "Renamed", "provider": "x", "modality": "llm"})
    assert response.status_code == 403
    model.refresh_from_db()
    assert model.name != "Renamed"


def test_org_admin_policy_form_rejects_a_malformed_document(client, acme_world):
    world, *_ = acme_world
    response = _login(client, world.alice).post(
        reverse("admin:portal_policy_add"),
        {"name": "Broken", "description": "", "document": '{"Version": "2", "Statement": []}'},
    )
    assert response.status_code == 200 and "Version" in response.content.decode()
    from portal.models import Policy

    assert not Policy.objects.filter(name="Broken").exists()
