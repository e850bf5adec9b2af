"""Invoices in the Django admin: alice (Acme's owner) reads Acme's invoices, their lines, credit
notes and PDFs and changes none of them; the platform superuser may correct a draft, never an
issued invoice; nobody adds or deletes invoices or credit notes by hand."""

from datetime import date
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.credit_notes import issue_credit_note
from billing.models import Invoice
from portal.services import SYSTEM
from tests import factories
from tests.billing import invoice_factories as invoices


@pytest.fixture
def books(world):
    qwen = factories.make_model("qwen-plus")
    acme = invoices.make_invoice(world.acme, [invoices.plan_fee("99.00"),
                                              invoices.usage(qwen, world.research, "5.55")])
    acme_note = issue_credit_note(actor=SYSTEM, invoice=acme, amount=Decimal("3.00"), reason="Acme outage")
    draft = invoices.make_invoice(world.acme, [invoices.plan_fee("99.00")], period_start=date(2026, 4, 1),
                                  status=Invoice.Status.DRAFT)
    globex = invoices.make_invoice(world.globex, [invoices.plan_fee("19.00")])
    globex_note = issue_credit_note(actor=SYSTEM, invoice=globex, amount=Decimal("1.00"), reason="Globex refund")
    return world, acme, acme_note, draft, globex, globex_note


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@platform.example", "pass-for-tests")


def test_alice_sees_acmes_invoices_and_credit_notes_only(client, books):
    world, acme, acme_note, draft, globex, globex_note = books
    client.force_login(world.alice.user)
    invoice_list = client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    assert acme.invoice_no in invoice_list and draft.invoice_no in invoice_list
    assert globex.invoice_no not in invoice_list and "Globex" not in invoice_list
    assert f"{acme.invoice_no}.pdf" in invoice_list
    note_list = client.get(reverse("admin:billing_creditnote_changelist")).content.decode()
    assert acme_note.credit_note_no in note_list and "Acme outage" in note_list
    assert globex_note.credit_note_no not in note_list and "Globex" not in note_list
    for url in (reverse("admin:billing_invoice_change", args=[globex.pk]),
                reverse("admin:billing_creditnote_change", args=[globex_note.pk])):
        response = client.get(url, follow=True)
        assert response.redirect_chain and "Globex" not in response.content.decode(), url


def test_alice_reads_an_invoice_with_its_lines_and_credit_notes_but_changes_nothing(client, books):
    world, acme, acme_note, *_ = books
    client.force_login(world.alice.user)
    page = client.get(reverse("admin:billing_invoice_change", args=[acme.pk]))
    body = page.content.decode()
    assert page.status_code == 200
    assert "qwen-plus · Research" in body and acme_note.credit_note_no in body and "Acme outage" in body
    assert 'name="_save"' not in body  # a view-only page
    refused = client.post(reverse("admin:billing_invoice_change", args=[acme.pk]),
                          {"buyer": '{"name": "Someone else"}'})
    assert refused.status_code == 403
    acme.refresh_from_db()
    assert acme.buyer["name"] == "Acme"
    assert client.get(reverse("admin:billing_invoice_add")).status_code == 403
    assert client.get(reverse("admin:billing_creditnote_add")).status_code == 403
    assert client.get(reverse("admin:billing_invoice_delete", args=[acme.pk])).status_code == 403


def test_the_pdf_link_serves_the_invoice_within_the_admins_organization(client, books):
    world, acme, _, _, globex, _ = books
    client.force_login(world.alice.user)
    response = client.get(reverse("admin:billing_invoice_pdf", args=[acme.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    assert client.get(reverse("admin:billing_invoice_pdf", args=[globex.pk])).status_code == 404


def test_the_superuser_corrects_a_draft_but_never_an_issued_invoice(client, books, superuser):
    world, acme, acme_note, draft, *_ = books
    client.force_login(superuser)
    draft_page = client.get(reverse("admin:billing_invoice_change", args=[draft.pk])).content.decode()
    assert 'name="_save"' in draft_page and 'name="buyer"' in draft_page
    issued_page = client.get(reverse("admin:billing_invoice_change", args=[acme.pk])).content.decode()
    assert 'name="_save"' not in issued_page and 'name="buyer"' not in issued_page
    assert client.post(reverse("admin:billing_invoice_change", args=[acme.pk]),
                       {"buyer": '{"name": "Renamed"}'}).status_code == 403
    assert client.get(reverse("admin:billing_invoice_delete", args=[acme.pk])).status_code == 403
    assert client.get(reverse("admin:billing_invoice_delete", args=[draft.pk])).status_code == 403
    assert client.get(reverse("admin:billing_creditnote_change", args=[acme_note.pk])).status_code == 200
    assert client.post(reverse("admin:billing_creditnote_change", args=[acme_note.pk]),
                       {"reason": "rewritten"}).status_code == 403
    acme.refresh_from_db()
    assert acme.buyer["name"] == "Acme"
    # A platform superuser, a member of no organization, still opens any invoice's PDF here.
    assert client.get(reverse("admin:billing_invoice_pdf", args=[acme.pk]))["Content-Type"] == "application/pdf"


def test_the_superuser_saves_a_drafts_parties_and_line_descriptions(client, books, superuser):
    world, _, _, draft, *_ = books
    line = draft.lines.get()
    client.force_login(superuser)
    response = client.post(reverse("admin:billing_invoice_change", args=[draft.pk]), {
        "seller": '{"name": "LLM Platform Ltd."}', "buyer": '{"name": "Acme Robotics Co., Ltd."}',
        "lines-TOTAL_FORMS": "1", "lines-INITIAL_FORMS": "1", "lines-0-id": str(line.pk),
        "lines-0-invoice": str(draft.pk), "lines-0-description": "Plan fee: Team (April)",
        "credit_notes-TOTAL_FORMS": "0", "credit_notes-INITIAL_FORMS": "0",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    draft.refresh_from_db()
    line.refresh_from_db()
    assert draft.buyer == {"name": "Acme Robotics Co., Ltd."} and line.description == "Plan fee: Team (April)"
    assert line.amount == Decimal("99.00") and draft.amount == Decimal("104.94")
