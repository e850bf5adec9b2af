"""Credit notes: alice corrects an issued invoice of Acme's. A note raises the balance through a
`credit_note` ledger entry, and the notes of an invoice never add up to more than the invoice,
however many arrive at once."""

import re
import threading
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection

from billing.credit_notes import CreditNoteRefused, issue_credit_note
from billing.models import BillingAccount, CreditNote, Invoice, LedgerEntry
from portal.models import AuditLog
from portal.services import SYSTEM
from tests.api_helpers import client_for
from tests.billing import invoice_factories as invoices


def notes_url(invoice: Invoice) -> str:
    return f"/api/v1/billing/invoices/{invoice.uuid}/credit-notes"


@pytest.fixture
def march(world) -> Invoice:
    """Acme's March invoice: 100.00 + 6 % tax = 106.00 CNY."""
    return invoices.make_invoice(world.acme, [invoices.plan_fee("100.00")], tax_rate="0.06")


def balance(organization) -> Decimal:
    return BillingAccount.objects.get(organization=organization).balance


def test_alice_credits_an_invoice_and_the_balance_rises_by_it(world, march, schema_validator):
    before = balance(world.acme)
    response = client_for(world.alice).post(notes_url(march), {"amount": "12.50", "reason": "Outage on 3 March"},
                                            format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    schema_validator("/api/v1/billing/invoices/{invoice_id}/credit-notes", "post", body)
    note = CreditNote.objects.get()
    assert body["id"] == str(note.uuid) and body["invoice_id"] == str(march.uuid)
    assert re.fullmatch(r"CN-\d{4}-\d{6}", body["credit_note_no"])
    assert (body["amount"], body["currency"], body["reason"]) == ("12.50", "CNY", "Outage on 3 March")

    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.CREDIT_NOTE)
    assert (entry.amount, entry.currency, entry.credit_note, entry.invoice) == (Decimal("12.50"), "CNY", note, march)
    assert balance(world.acme) == before + Decimal("12.50")
    audit = AuditLog.objects.get(action="credit_note.issue")
    assert audit.actor == world.alice and audit.organization == world.acme and audit.target_id == str(note.pk)

    detail = client_for(world.alice).get(f"/api/v1/billing/invoices/{march.uuid}").json()
    assert detail["credit_notes"] == [body]
    assert detail["amount_rmb"] == "106.00"  # the invoice itself never changes


def test_credit_notes_never_add_up_to_more_than_the_invoice(world, march):
    alice = client_for(world.alice)
    assert alice.post(notes_url(march), {"amount": "100.00", "reason": "most"}, format="json").status_code == 201
    too_much = alice.post(notes_url(march), {"amount": "6.01", "reason": "one cent over"}, format="json")
    assert too_much.status_code == 422
    [problem] = too_much.json()["detail"]
    assert problem["loc"] == ["body", "amount"] and "6.00" in problem["msg"]
    assert alice.post(notes_url(march), {"amount": "6.00", "reason": "the rest"}, format="json").status_code == 201
    assert alice.post(notes_url(march), {"amount": "0.01", "reason": "nothing left"},
                      format="json").status_code == 422
    assert sum(march.credit_notes.values_list("amount", flat=True)) == march.amount == Decimal("106.00")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CREDIT_NOTE).count() == 2


def test_numbers_stay_gapless_when_a_note_is_refused(world, march):
    alice = client_for(world.alice)
    first = alice.post(notes_url(march), {"amount": "1.00", "reason": "a"}, format="json").json()["credit_note_no"]
    alice.post(notes_url(march), {"amount": "500.00", "reason": "refused"}, format="json")
    second = alice.post(notes_url(march), {"amount": "1.00", "reason": "b"}, format="json").json()["credit_note_no"]
    assert int(second[-6:]) == int(first[-6:]) + 1


@pytest.mark.parametrize("status", [Invoice.Status.DRAFT, Invoice.Status.VOID], ids=["draft", "void"])
def test_only_issued_or_paid_invoices_take_credit_notes(world, status):
    invoice = invoices.make_invoice(world.acme, [invoices.plan_fee("100.00")], status=status)
    before = balance(world.acme)
    response = client_for(world.alice).post(notes_url(invoice), {"amount": "1.00", "reason": "r"}, format="json")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "invoice_id"]
    assert status in response.json()["detail"][0]["msg"]
    assert not CreditNote.objects.exists() and not LedgerEntry.objects.filter(kind="credit_note").exists()
    assert balance(world.acme) == before


def test_a_paid_invoice_takes_a_credit_note(world):
    paid = invoices.make_invoice(world.acme, [invoices.plan_fee("100.00")], status=Invoice.Status.PAID)
    response = client_for(world.alice).post(notes_url(paid), {"amount": "1.00", "reason": "r"}, format="json")
    assert response.status_code == 201


@pytest.mark.parametrize("body, field", [
    ({"amount": "0", "reason": "r"}, "amount"),
    ({"amount": "-5.00", "reason": "r"}, "amount"),
    ({"amount": "abc", "reason": "r"}, "amount"),
    ({"amount": "1.234", "reason": "r"}, "amount"),
    ({"reason": "r"}, "amount"),
    ({"amount": "1.00"}, "reason"),
    ({"amount": "1.00", "reason": ""}, "reason"),
], ids=["zero", "negative", "not-a-number", "three-places", "no-amount", "no-reason", "blank-reason"])
def test_a_bad_credit_note_is_a_422_naming_the_field(world, march, body, field):
    response = client_for(world.alice).post(notes_url(march), body, format="json")
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["body", field]]
    assert not CreditNote.objects.exists()


def test_the_service_refuses_what_the_api_refuses(world, march):
    # Callers other than the API (the admin, a command) meet the same rules.
    for amount in (Decimal("0"), Decimal("0.001"), Decimal("106.01")):
        with pytest.raises(CreditNoteRefused) as refused:
            issue_credit_note(actor=SYSTEM, invoice=march, amount=amount, reason="r")
        assert refused.value.field == "amount"
    note = issue_credit_note(actor=SYSTEM, invoice=march, amount=Decimal("106.00"), reason="all of it")
    assert note.amount == march.amount


def test_a_credit_note_is_numbered_in_the_year_it_is_issued_in_the_organizations_timezone(world, march):
    import time_machine

    # 16:30 UTC on New Year's Eve is already 1 January in Shanghai.
    with time_machine.travel("2026-12-31T16:30:00Z", tick=False):
        note = issue_credit_note(actor=SYSTEM, invoice=march, amount=Decimal("1.00"), reason="r")
    assert note.credit_note_no.startswith("CN-2027-")


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_credit_notes_cannot_overdraw_the_invoice(monkeypatch):
    """Two requests at once for 60 of a 106 invoice: on PostgreSQL one is issued and the other,
    having waited on the invoice's row lock, sees the first note and is refused."""
    from tests import factories

    if connection.vendor == "sqlite":
        # SQLite has no row locks: its database lock turns a writer away after the busy timeout
        # ("database is locked"); a short one keeps the story short.
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 2)
    acme = factories.make_organization("Acme")
    alice = factories.make_member(acme, "alice", role="owner")
    invoice = invoices.make_invoice(acme, [invoices.plan_fee("100.00")], period_start=date(2026, 3, 1))
    clients = [client_for(alice), client_for(alice)]
    barrier = threading.Barrier(2)
    statuses, failures = [], []

    def credit(client) -> None:
        try:
            barrier.wait()
            response = client.post(notes_url(invoice), {"amount": "60.00", "reason": "race"}, format="json")
            statuses.append(response.status_code)
        except Exception as error:  # surfaced below with its cause
            failures.append(error)
        finally:
            connection.close()  # each thread has its own connection

    threads = [threading.Thread(target=credit, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    issued = CreditNote.objects.filter(invoice=invoice).count()
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CREDIT_NOTE).count() == issued
    assert BillingAccount.objects.get(organization=acme).balance == Decimal("60.00") * issued
    if connection.vendor == "sqlite":
        # Both transactions read before they write, so SQLite may refuse one or both of them as
        # locked; what matters holds all the same: never two notes.
        assert issued <= 1 and statuses.count(201) <= issued
        assert all("database is locked" in str(failure) for failure in failures), failures
    else:
        assert not failures, failures
        assert sorted(statuses) == [201, 422] and issued == 1
