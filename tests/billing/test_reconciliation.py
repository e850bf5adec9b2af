"""The nightly reconciliation reports every difference between what billing keeps and what raw
events and ledger entries say, and fixes none of them."""

import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection

from billing.invoicing import run_billing
from billing.models import BillingAccount, Invoice
from billing.reconciliation import reconcile
from billing.services import grant_credit
from portal.services import SYSTEM
from tests import factories
from usage.services import ingest_events

# 1,234 prompt and 567 completion tokens at 3.3 and 7.7 per million: 0.0084381 each.
EVENT_COST = Decimal("0.0084381")


@pytest.fixture
def acme_with_usage(world):
    """Acme topped up 100 CNY and used ten events in March; its running balance agrees."""
    world.qwen = factories.make_model("qwen-plus", cny=("3.3", "0.3", "7.7", "0", "0"))
    world.key, _ = factories.make_inference_key(world.research)
    grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("100"), kind="top_up",
                 at=datetime(2026, 2, 20, tzinfo=UTC))
    ingest_events([factories.event(world.key, world.qwen, timestamp=f"2026-03-{day:02d}T10:00:00+08:00",
                                   prompt_tokens=1234, completion_tokens=567) for day in range(1, 11)])
    # The running balance as the ledger keeps it beside each movement (ingestion charges it): set
    # here from the story's own figures, so that this story does not depend on how it got there.
    BillingAccount.objects.filter(organization=world.acme).update(balance=Decimal("100") - 10 * EVENT_COST)
    return world


def test_balances_that_agree_with_their_ledger_and_usage_report_nothing(acme_with_usage):
    report = reconcile()
    assert report.clean and report.accounts_checked == 2


def test_a_planted_difference_in_a_running_balance_is_found_and_left_alone(acme_with_usage, caplog):
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_billingaccount SET balance = balance + 0.01 WHERE organization_id = %s",
                       [acme_with_usage.acme.pk])
    with caplog.at_level(logging.ERROR, logger="billing.reconciliation"):
        report = reconcile()

    (difference,) = report.balance_differences
    assert difference.organization_id == acme_with_usage.acme.pk
    assert (difference.entries, difference.usage) == (Decimal("100"), 10 * EVENT_COST)
    assert difference.difference == Decimal("0.01")
    assert "off by 0.01" in caplog.text and caplog.records[0].levelname == "ERROR"
    # Reported, never fixed.
    assert BillingAccount.objects.get(organization=acme_with_usage.acme).balance == Decimal("100.01") - 10 * EVENT_COST


def test_an_issued_invoice_agrees_with_its_raw_events_until_a_late_event_arrives(acme_with_usage):
    world = acme_with_usage
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    invoice = Invoice.objects.get(organization=world.acme)
    assert reconcile().invoice_differences == [] and reconcile().invoices_checked == 1

    # An event for 31 March reaches the portal after March was invoiced.
    ingest_events([factories.event(world.key, world.qwen, timestamp="2026-03-31T23:59:59+08:00",
                                   prompt_tokens=1234, completion_tokens=567)])
    report = reconcile()

    (difference,) = report.invoice_differences
    assert (difference.invoice_no, difference.model_id, difference.department_id) == (
        invoice.invoice_no, world.qwen.pk, world.research.pk)
    assert (difference.invoiced, difference.events) == (10 * EVENT_COST, 11 * EVENT_COST)
    assert difference.difference == -EVENT_COST


def test_a_changed_event_cost_is_found_in_the_invoice_it_was_billed_on(acme_with_usage):
    with time_machine.travel(datetime(2026, 4, 2, 12, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE usage_usageevent SET cost = cost + 1 WHERE id = (SELECT MIN(id) FROM usage_usageevent)")
    report = reconcile()
    assert [d.difference for d in report.invoice_differences] == [Decimal("-1")]
    assert [d.difference for d in report.balance_differences] == [Decimal("1")]


def test_the_command_lists_differences_and_fails(acme_with_usage):
    out = StringIO()
    call_command("reconcile_billing", stdout=out)
    assert "2 accounts and 0 invoices checked: 0 balance and 0 invoice differences." in out.getvalue()

    BillingAccount.objects.filter(organization=acme_with_usage.acme).update(balance=Decimal("0"))
    out = StringIO()
    with pytest.raises(CommandError, match="found differences"):
        call_command("reconcile_billing", stdout=out)
    assert "balance  Acme" in out.getvalue() and "off by -99.91561900" in out.getvalue()
