"""The admin's pages around the rows: a plain member is sent to the portal, the organization page
has its departments, members and a usage chart, an invoice its lines, and every object a link to
its audit trail."""

import json

from django.conf import settings
from django.urls import reverse

from billing.models import Invoice
from portal.models import AuditLog, Member


def test_a_plain_member_who_opens_the_admin_is_sent_to_the_portal(client, world):
    client.force_login(world.bob.user)
    response = client.get("/admin/", follow=True)
    body = response.content.decode()
    assert 'data-testid="use-the-portal"' in body and 'href="/"' in body
    assert "Acme" in body
    assert 'id="login-form"' not in body  # not the login form that would loop back here


def test_staff_acting_for_an_organization_they_do_not_administer_is_sent_to_the_portal(client, world):
    # amir administers Acme (so he is staff) and is a plain member of Globex; he switches to Globex.
    Member.objects.create(user=world.amir.user, organization=world.globex, role=Member.Role.MEMBER)
    client.force_login(world.amir.user)
    client.post("/switch-organization/", {"organization": str(world.globex.uuid)})
    assert client.session[settings.SESSION_ORGANIZATION_KEY] == world.globex.pk
    body = client.get("/admin/").content.decode()
    assert 'data-testid="use-the-portal"' in body and "Globex" in body
    assert "Research" not in body


def test_an_anonymous_visitor_still_gets_the_login_form(client, db):
    body = client.get("/admin/", follow=True).content.decode()
    assert 'id="login-form"' in body and "use-the-portal" not in body


def test_the_organization_page_lists_departments_and_members_and_draws_30_days_of_cost(client, world, recent_usage):
    client.force_login(world.alice.user)
    response = client.get(reverse("admin:portal_organization_change", args=[world.acme.pk]))
    body = response.content.decode()
    assert "Research" in body and "Support" in body and "amir" in body and "bob" in body
    assert "Sales" not in body and "charlie" not in body
    assert 'data-chart="organization-daily-cost"' in body and "vendor/chartjs/chart.umd.min.js" in body
    spec = response.context["usage_chart"]
    assert len(spec["labels"]) == 30 and spec["money"] == "CNY"
    assert abs(sum(spec["datasets"][0]["data"]) - float(recent_usage)) < 1e-6
    assert json.dumps(spec["labels"][-1]) in body


def test_an_invoice_page_lists_its_lines(client, world, books):
    client.force_login(world.alice.user)
    body = client.get(reverse("admin:billing_invoice_change", args=[books.acme_invoice.pk])).content.decode()
    assert "Plan fee: Team" in body and "qwen-plus · Research" in body


def test_every_objects_page_links_to_its_audit_trail_in_the_portal(client, world, books):
    client.force_login(world.alice.user)
    for url, target in (
        (reverse("admin:keys_inferencekey_change", args=[books.acme_key.pk]), books.acme_key),
        (reverse("admin:portal_department_change", args=[world.research.pk]), world.research),
        (reverse("admin:portal_organization_change", args=[world.acme.pk]), world.acme),
        (reverse("admin:billing_invoice_change", args=[books.acme_invoice.pk]), books.acme_invoice),
        (reverse("admin:billing_creditgrant_change", args=[books.acme_grant.pk]), books.acme_grant),
    ):
        body = client.get(url).content.decode()
        link = f"/audit/?target_type={type(target).__name__.lower()}&amp;target_id={target.pk}"
        assert link in body, url
        assert 'data-testid="audit-admin-link"' not in body  # the AuditLog admin is the operators'


def test_the_portal_audit_link_finds_the_objects_rows(client, world, books):
    client.force_login(world.alice.user)
    body = client.get(f"/audit/?target_type=inferencekey&target_id={books.acme_key.pk}").content.decode()
    assert "inference_key.create" in body


def test_an_operator_also_gets_the_audit_log_admin_filtered_to_the_object(client, world, books, root):
    client.force_login(root)
    body = client.get(reverse("admin:keys_inferencekey_change", args=[books.acme_key.pk])).content.decode()
    url = f"/admin/portal/auditlog/?target_type=inferencekey&target_id={books.acme_key.pk}"
    assert url.replace("&", "&amp;") in body
    listed = client.get(url)
    assert listed.status_code == 200
    rows = list(listed.context["cl"].result_list)
    assert rows and all(row.target_id == str(books.acme_key.pk) for row in rows)
    assert AuditLog.objects.filter(target_type="inferencekey").count() > len(rows)  # globex's key too


def test_an_invoice_draft_is_still_a_draft_for_org_admins(client, world, books):
    client.force_login(world.alice.user)
    body = client.get(reverse("admin:billing_invoice_change", args=[books.acme_draft.pk])).content.decode()
    assert 'name="_save"' not in body
    assert Invoice.objects.get(pk=books.acme_draft.pk).status == Invoice.Status.DRAFT
