"""What carries the ledger is never deleted by an org admin, one by one or in bulk; issued
invoices are read-only to everyone; operators (platform superusers) issue or void drafts and
grant credit, through the services, audited; org admins are offered none of it."""

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import BillingAccount, CreditGrant, Invoice, LedgerEntry
from billing.money import format_money
from portal.models import AuditLog
from usage.models import UsageEvent

LEDGER_BEARING = [
    ("billing", "billingaccount", BillingAccount), ("billing", "creditgrant", CreditGrant),
    ("billing", "ledgerentry", LedgerEntry), ("billing", "invoice", Invoice),
    ("billing", "creditnote", None), ("usage", "usageevent", UsageEvent),
]


@pytest.mark.parametrize("app, model, cls", LEDGER_BEARING, ids=[m for _, m, _ in LEDGER_BEARING])
def test_an_org_admin_is_offered_no_bulk_delete_of_ledger_bearing_rows(client, world, books, app, model, cls):
    client.force_login(world.alice.user)
    url = reverse(f"admin:{app}_{model}_changelist")
    assert 'value="delete_selected"' not in client.get(url).content.decode()
    if cls is None:
        return
    before = cls.objects.count()
    rows = list(cls.objects.filter(**({"organization": world.acme})).values_list("pk", flat=True))
    client.post(url, {"action": "delete_selected", "_selected_action": rows, "index": "0", "post": "yes"})
    assert cls.objects.count() == before


def test_an_org_admin_cannot_delete_their_billing_account_or_type_its_balance(client, world, books):
    account = BillingAccount.objects.get(organization=world.acme)
    balance = account.balance
    client.force_login(world.alice.user)
    assert client.get(reverse("admin:billing_billingaccount_delete", args=[account.pk])).status_code == 403
    url = reverse("admin:billing_billingaccount_change", args=[account.pk])
    body = client.get(url).content.decode()
    assert 'name="balance"' not in body and 'name="tax_rate"' not in body
    assert format_money(balance, "CNY", "en") in body  # the balance, shown as money
    client.post(url, {"monthly_budget": "10", "balance": "1000000", "legal_name": "Acme Ltd", "address": "",
                      "billing_email": "", "tax_id": ""})
    account.refresh_from_db()
    assert account.balance == balance and account.legal_name == "Acme Ltd"


def test_an_issued_invoice_is_read_only_even_to_an_operator(client, books, root):
    client.force_login(root)
    url = reverse("admin:billing_invoice_change", args=[books.acme_invoice.pk])
    assert 'name="_save"' not in client.get(url).content.decode()
    response = client.post(url, {"buyer": '{"name": "Someone else"}', "seller": "{}"})
    assert response.status_code == 403
    books.acme_invoice.refresh_from_db()
    assert books.acme_invoice.buyer["name"] != "Someone else"


def _act(client, action, *invoices, **extra):
    return client.post(reverse("admin:billing_invoice_changelist"),
                       {"action": action, "_selected_action": [invoice.pk for invoice in invoices], "index": "0",
                        **extra})


def test_an_operator_issues_a_draft_with_a_number_an_audit_row_and_an_event(client, books, root):
    client.force_login(root)
    response = _act(client, "issue_drafts", books.acme_draft, books.acme_invoice)
    assert response.status_code == 302
    books.acme_draft.refresh_from_db()
    assert books.acme_draft.status == Invoice.Status.ISSUED and books.acme_draft.issued_at
    assert books.acme_draft.invoice_no.startswith("INV-")
    entry = AuditLog.objects.get(action="invoice.issue", target_id=str(books.acme_draft.pk))
    assert entry.actor_label == "root"


def test_an_operator_voids_a_draft_and_an_issued_invoice_stays_as_it_is(client, books, root):
    client.force_login(root)
    _act(client, "void_drafts", books.acme_draft, books.acme_invoice)
    books.acme_draft.refresh_from_db()
    books.acme_invoice.refresh_from_db()
    assert books.acme_draft.status == Invoice.Status.VOID
    assert books.acme_invoice.status == Invoice.Status.ISSUED
    assert AuditLog.objects.filter(action="invoice.void", target_id=str(books.acme_draft.pk)).exists()


def test_an_org_admin_can_neither_issue_nor_void_a_draft(client, world, books):
    client.force_login(world.alice.user)
    body = client.get(reverse("admin:billing_invoice_changelist")).content.decode()
    assert "issue_drafts" not in body and "void_drafts" not in body
    for action in ("issue_drafts", "void_drafts"):
        _act(client, action, books.acme_draft)
    books.acme_draft.refresh_from_db()
    assert books.acme_draft.status == Invoice.Status.DRAFT


def test_an_operator_grants_credit_to_accounts_from_their_list(client, world, books, root):
    client.force_login(root)
    accounts = list(BillingAccount.objects.filter(organization__in=[world.acme, world.globex]))
    url = reverse("admin:billing_billingaccount_changelist")
    selected = {"action": "grant_credits", "_selected_action": [account.pk for account in accounts]}
    form = client.post(url, {**selected, "index": "0"})
    assert form.status_code == 200 and 'name="amount"' in form.content.decode()
    refused = client.post(url, {**selected, "grant": "yes", "amount": "-5", "kind": "grant"})
    assert refused.status_code == 200 and CreditGrant.objects.filter(note="Welcome").count() == 0
    done = client.post(url, {**selected, "grant": "yes", "amount": "20", "kind": "grant", "note": "Welcome"})
    assert done.status_code == 302
    grants = CreditGrant.objects.filter(note="Welcome")
    assert sorted((grant.organization.name, grant.currency, grant.amount) for grant in grants) == [
        ("Acme", "CNY", Decimal(20)), ("Globex", "USD", Decimal(20))]
    assert LedgerEntry.objects.filter(grant__in=grants).count() == 2
    assert AuditLog.objects.filter(action="credit.grant", actor_label="root").count() == 2


def test_an_org_admin_cannot_grant_credit_from_the_account_list(client, world, books):
    client.force_login(world.alice.user)
    account = BillingAccount.objects.get(organization=world.acme)
    url = reverse("admin:billing_billingaccount_changelist")
    assert "grant_credits" not in client.get(url).content.decode()
    client.post(url, {"action": "grant_credits", "_selected_action": [account.pk], "grant": "yes", "amount": "20",
                      "kind": "grant", "note": "Self-service"})
    assert not CreditGrant.objects.filter(note="Self-service").exists()
