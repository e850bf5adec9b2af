"""Tenant isolation on every admin page this work touched: alice (Acme's owner) sees no row of
Globex on any list, and a Globex object's URL sends her back to the admin index ("does not
exist"), for reading, for changing and for the pages added here (the invoice PDF)."""

import pytest
from django.urls import reverse

from billing.models import BillingAccount, LedgerEntry

CHANGELISTS = [
    "portal_organization", "portal_department", "portal_member", "portal_auditlog", "keys_inferencekey",
    "billing_billingaccount", "billing_creditgrant", "billing_ledgerentry", "billing_invoice", "billing_creditnote",
    "usage_usageevent",
]
GLOBEX_MARKS = ("Globex", "globex-app", "globex-req", "globex grant", "globex refund", "Sales", "charlie",
                "America/New_York", "$")


@pytest.mark.parametrize("changelist", CHANGELISTS)
def test_acmes_admin_lists_show_no_globex_row(client, world, books, changelist):
    client.force_login(world.alice.user)
    response = client.get(reverse(f"admin:{changelist}_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    for mark in GLOBEX_MARKS:
        assert mark not in body, mark
    assert response.context["cl"].result_count >= 1  # and it does show Acme's


def _globex_urls(world, books):
    account = BillingAccount.objects.get(organization=world.globex)
    entry = LedgerEntry.objects.filter(organization=world.globex).first()
    return [
        reverse("admin:portal_organization_change", args=[world.globex.pk]),
        reverse("admin:portal_department_change", args=[world.sales.pk]),
        reverse("admin:portal_member_change", args=[world.charlie.pk]),
        reverse("admin:keys_inferencekey_change", args=[books.globex_key.pk]),
        reverse("admin:keys_inferencekey_delete", args=[books.globex_key.pk]),
        reverse("admin:billing_billingaccount_change", args=[account.pk]),
        reverse("admin:billing_creditgrant_change", args=[books.globex_grant.pk]),
        reverse("admin:billing_ledgerentry_change", args=[entry.pk]),
        reverse("admin:billing_invoice_change", args=[books.globex_invoice.pk]),
        reverse("admin:billing_invoice_change", args=[books.globex_draft.pk]),
        reverse("admin:usage_usageevent_change", args=[books.globex_event.pk]),
    ]


def test_a_globex_objects_url_sends_acmes_admin_away(client, world, books):
    client.force_login(world.alice.user)
    for url in _globex_urls(world, books):
        response = client.get(url, follow=True)
        body = response.content.decode()
        assert response.redirect_chain or response.status_code == 404, url
        assert "globex-app" not in body and "Sales" not in body and "audit-trail-link" not in body, url
    pdf = client.get(reverse("admin:billing_invoice_pdf", args=[books.globex_invoice.pk]))
    assert pdf.status_code == 404


def test_posting_to_a_globex_key_changes_nothing(client, world, books):
    client.force_login(world.alice.user)
    client.post(reverse("admin:keys_inferencekey_change", args=[books.globex_key.pk]),
                {"name": "hijacked", "models_allowed": [], "allowed_ips": "", "rpm_limit": "", "tpm_limit": ""})
    client.post(reverse("admin:keys_inferencekey_delete", args=[books.globex_key.pk]), {"post": "yes"})
    books.globex_key.refresh_from_db()
    assert books.globex_key.name == "globex-app" and books.globex_key.deleted_at is None


def test_charlie_sees_none_of_acme_on_the_pages_added_here(client, world, books):
    client.force_login(world.charlie.user)
    body = client.get(reverse("admin:portal_organization_change", args=[world.globex.pk])).content.decode()
    assert "Research" not in body and "alice" not in body and "bob" not in body
    assert client.get(reverse("admin:portal_organization_change", args=[world.acme.pk]), follow=True).redirect_chain
