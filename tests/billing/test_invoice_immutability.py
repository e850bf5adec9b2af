"""An issued invoice never changes (API.md §10): the model layer refuses every edit but payment and
voiding, and on PostgreSQL a trigger refuses raw SQL too. Corrections are credit notes."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from billing.invoicing import run_billing
from billing.models import BillingAccount, Invoice, InvoiceLine
from tests import factories
from usage.services import ingest_events


@pytest.fixture
def issued(world):
    """Acme's March invoice, issued by the nightly job: 4.00 CNY of usage."""
    key, _ = factories.make_inference_key(world.research)
    ingest_events([factories.event(key, factories.make_model("qwen-plus"), timestamp="2026-03-10T10:00:00+08:00",
                                   prompt_tokens=2_000_000, completion_tokens=1_000_000)])
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    invoice = Invoice.objects.get(organization=world.acme)
    assert invoice.status == Invoice.Status.ISSUED and invoice.lines.count() == 1
    assert invoice.amount == Decimal("4.00")
    return invoice


@pytest.mark.parametrize(("field", "value"), [
    ("amount", Decimal("0.01")),
    ("subtotal", Decimal("1000")),
    ("invoice_no", "INV-2026-999999"),
    ("period_end", date(2026, 3, 30)),
    ("buyer", {"name": "Someone else"}),
], ids=["amount", "subtotal", "number", "period", "buyer"])
def test_the_model_layer_refuses_to_change_an_issued_invoice(issued, field, value):
    setattr(issued, field, value)
    with pytest.raises(ValidationError, match="cannot change"):
        issued.save()


def test_the_model_layer_refuses_to_delete_an_issued_invoice_or_touch_its_lines(issued):
    with pytest.raises(ValidationError, match="cannot be deleted"):
        issued.delete()
    line = issued.lines.get()
    line.amount = Decimal("0")
    with pytest.raises(ValidationError, match="never change"):
        line.save()
    with pytest.raises(ValidationError, match="never change"):
        line.delete()
    with pytest.raises(ValidationError, match="never change"):
        InvoiceLine(invoice=issued, kind="adjustment", description="sneaked in", amount=Decimal("5")).save()
    assert issued.lines.get().amount == line.exact_amount.quantize(Decimal("0.01"))


def test_payment_is_the_one_change_an_issued_invoice_takes(issued):
    issued.status, issued.paid_at = Invoice.Status.PAID, datetime(2026, 4, 20, tzinfo=UTC)
    issued.save()
    issued.refresh_from_db()
    assert issued.status == "paid" and issued.paid_at == datetime(2026, 4, 20, tzinfo=UTC)


RAW_CHANGES = [
    "UPDATE billing_invoice SET amount = 0 WHERE id = %s",
    "DELETE FROM billing_invoice WHERE id = %s",
    "UPDATE billing_invoiceline SET amount = 0 WHERE invoice_id = %s",
    "DELETE FROM billing_invoiceline WHERE invoice_id = %s",
    "INSERT INTO billing_invoiceline (uuid, invoice_id, kind, description, quantity, unit, exact_amount, amount) "
    "SELECT uuid, invoice_id, 'adjustment', 'sneaked in', 0, '', 5, 5 FROM billing_invoiceline WHERE invoice_id = %s",
]


@pytest.mark.parametrize("statement", RAW_CHANGES,
                         ids=["update-invoice", "delete-invoice", "update-line", "delete-line", "insert-line"])
def test_raw_sql_cannot_change_an_issued_invoice_on_postgresql(issued, statement):
    if connection.vendor != "postgresql":
        # SQLite has no such trigger (billing/migrations/0005): there the model layer is the only
        # guard (the nightly reconciliation is what would notice), and the raw statement goes through.
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement.replace("SELECT uuid,", "SELECT hex(randomblob(16)),"), [issued.pk])
            assert cursor.rowcount == 1
            transaction.set_rollback(True)  # a deleted invoice would leave its lines dangling
        return
    with pytest.raises(IntegrityError, match="issued invoice|lines of an issued invoice"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement.replace("SELECT uuid,", "SELECT gen_random_uuid(),"), [issued.pk])
    issued.refresh_from_db()
    assert issued.amount == Decimal("4.00") and issued.lines.get().amount == Decimal("4.00")


def test_the_trigger_still_lets_a_draft_be_built_and_issued(world):
    BillingAccount.objects.filter(organization=world.acme).update(draft_grace_days=2)
    key, _ = factories.make_inference_key(world.research)
    ingest_events([factories.event(key, factories.make_model("qwen-plus"), timestamp="2026-03-10T10:00:00+08:00")])
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    draft = Invoice.objects.get(organization=world.acme)
    # A draft's lines are still open to correction, through SQL too.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_invoiceline SET description = 'corrected' WHERE invoice_id = %s", [draft.pk])
    with time_machine.travel(datetime(2026, 4, 4, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 4))
    draft.refresh_from_db()
    assert draft.status == "issued" and draft.lines.get().description == "corrected"
