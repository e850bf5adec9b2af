"""The admin's stories: alice owns Acme (Asia/Shanghai, CNY), bob is a plain member of Acme,
charlie owns Globex (America/New_York, USD), root is the platform operator. Each organization
has a key, an event, a grant, an issued invoice and a draft, so that every changelist has a row
of each organization to show or to hide."""

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing.credit_notes import issue_credit_note
from billing.models import CreditGrant, Invoice
from billing.services import grant_credit
from keys.models import InferenceKey
from portal.services import SYSTEM
from tests import factories
from tests.billing import invoice_factories as invoices
from usage.models import UsageEvent
from usage.services import ingest_events

# One instant, in both organizations' days: 18:00 in Shanghai, 05:00 in New York.
EVENT_AT = "2026-03-01T10:00:00+00:00"


@dataclass
class Books:
    acme_key: InferenceKey
    acme_secret: str
    globex_key: InferenceKey
    acme_event: UsageEvent
    globex_event: UsageEvent
    acme_grant: CreditGrant
    globex_grant: CreditGrant
    acme_invoice: Invoice
    acme_draft: Invoice
    globex_invoice: Invoice
    globex_draft: Invoice


@pytest.fixture
def books(world) -> Books:
    qwen = factories.make_model("qwen-plus")
    factories.make_model("deepseek-v3")
    acme_key, acme_secret = factories.make_inference_key(world.research, owner=world.alice, name="acme-app")
    globex_key, _ = factories.make_inference_key(world.sales, owner=world.charlie, name="globex-app")
    ingest_events([factories.event(acme_key, qwen, request_id="acme-req", timestamp=EVENT_AT),
                   factories.event(globex_key, qwen, request_id="globex-req", timestamp=EVENT_AT)])
    grants = [grant_credit(actor=SYSTEM, organization=organization, amount=Decimal("12.5"), note=f"{note} grant")
              for organization, note in ((world.acme, "acme"), (world.globex, "globex"))]
    books = Books(
        acme_key=acme_key, acme_secret=acme_secret, globex_key=globex_key,
        acme_event=UsageEvent.objects.get(request_id="acme-req"),
        globex_event=UsageEvent.objects.get(request_id="globex-req"),
        acme_grant=grants[0], globex_grant=grants[1],
        acme_invoice=invoices.make_invoice(world.acme, [invoices.plan_fee("99.00"),
                                                        invoices.usage(qwen, world.research, "5.55123456")]),
        acme_draft=invoices.make_invoice(world.acme, [invoices.plan_fee("99.00")], period_start=date(2026, 4, 1),
                                         status=Invoice.Status.DRAFT),
        globex_invoice=invoices.make_invoice(world.globex, [invoices.plan_fee("19.00")]),
        globex_draft=invoices.make_invoice(world.globex, [invoices.plan_fee("19.00")],
                                           period_start=date(2026, 4, 1), status=Invoice.Status.DRAFT),
    )
    issue_credit_note(actor=SYSTEM, invoice=books.acme_invoice, amount=Decimal("3.00"), reason="acme outage")
    issue_credit_note(actor=SYSTEM, invoice=books.globex_invoice, amount=Decimal("1.00"), reason="globex refund")
    return books


@pytest.fixture
def root(db):
    return get_user_model().objects.create_superuser("root", "root@platform.example", "pass-for-tests")


@pytest.fixture
def recent_usage(world):
    """Acme's usage of the last days, for the organization page's chart."""
    model = factories.make_model("chart-model")
    key, _ = factories.make_inference_key(world.research, name="chart-key")
    now = timezone.now()
    events = [factories.event(key, model, request_id=f"recent-{index}",
                              timestamp=(now - timedelta(days=days)).isoformat())
              for index, days in enumerate((1, 2, 2))]
    ingest_events(events)
    return sum((event.cost for event in UsageEvent.objects.filter(request_id__startswith="recent-")), Decimal(0))
