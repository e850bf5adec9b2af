"""Invoices for tests, made the way the nightly job makes them: a draft, its lines, its totals from
its lines (API.md §10), then issued. The job itself (billing.invoicing) is not used here: these
tests read invoices, whoever wrote them."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.models import BillingAccount, Invoice, InvoiceLine, Model
from billing.money import ZERO, round_display_amount
from billing.numbering import INVOICE, next_number
from portal.models import Department, Organization
from usage.models import UsageEvent
from usage.timebuckets import local_midnight_of

SELLER = {"name": "LLM Platform Ltd.", "address": "1 Model Road, Hangzhou", "tax_id": "91330100MA2TEST01X",
          "email": "billing@platform.example"}


@dataclass
class Line:
    kind: str
    description: str
    amount: Decimal
    exact_amount: Decimal | None = None
    model: Model | None = None
    department: Department | None = None
    quantity: Decimal = Decimal("1")
    unit: str = ""
    unit_price: Decimal | None = None


def plan_fee(amount: str, description: str = "Plan fee: Team") -> Line:
    return Line(InvoiceLine.Kind.PLAN_FEE, description, Decimal(amount), unit="month", unit_price=Decimal(amount))


def usage(model: Model, department: Department, exact_amount: str, *, tokens: int = 1_500_000) -> Line:
    exact = Decimal(exact_amount)
    return Line(InvoiceLine.Kind.USAGE, f"{model.code} · {department.name}", round_display_amount(exact), exact,
                model=model, department=department, quantity=Decimal(tokens), unit="tokens")


def credit(amount: str, description: str = "Prepaid credit") -> Line:
    return Line(InvoiceLine.Kind.CREDIT, description, -Decimal(amount))


def adjustment(amount: str, description: str = "Adjustment") -> Line:
    return Line(InvoiceLine.Kind.ADJUSTMENT, description, Decimal(amount))


def make_invoice(organization: Organization, lines: list[Line], *, period_start: date = date(2026, 3, 1),
                 status: str = Invoice.Status.ISSUED, tax_rate: str = "0.06", seller: dict[str, Any] | None = None,
                 buyer: dict[str, Any] | None = None, issued_at: datetime | None = None) -> Invoice:
    """One invoice of the calendar month starting `period_start`, with totals equal to its parts."""
    next_month = (period_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    account = BillingAccount.objects.get(organization=organization)
    rate = Decimal(tax_rate)
    subtotal = sum((line.amount for line in lines if line.kind != InvoiceLine.Kind.CREDIT), ZERO)
    tax = round_display_amount(subtotal * rate)
    credits_applied = -sum((line.amount for line in lines if line.kind == InvoiceLine.Kind.CREDIT), ZERO)
    with transaction.atomic():
        invoice = Invoice.objects.create(
            organization=organization, invoice_no=next_number(INVOICE, next_month.year), period_start=period_start,
            period_end=next_month - timedelta(days=1), currency=account.currency, subtotal=subtotal, tax_rate=rate,
            tax=tax, credits_applied=credits_applied, amount=subtotal + tax - credits_applied,
            seller=SELLER if seller is None else seller,
            buyer=buyer if buyer is not None else {"name": account.legal_name or organization.name,
                                                   "address": account.address, "tax_id": account.tax_id})
        for line in lines:
            InvoiceLine.objects.create(
                invoice=invoice, kind=line.kind, description=line.description, model=line.model,
                department=line.department, quantity=line.quantity, unit=line.unit, unit_price=line.unit_price,
                exact_amount=line.amount if line.exact_amount is None else line.exact_amount, amount=line.amount)
        if status != Invoice.Status.DRAFT:
            invoice.status = status
            invoice.issued_at = issued_at or timezone.now()
            if status == Invoice.Status.PAID:
                invoice.paid_at = invoice.issued_at
            # Issued in one write, as the job does: after it, the model layer refuses other changes.
            Invoice.objects.filter(pk=invoice.pk).update(status=invoice.status, issued_at=invoice.issued_at,
                                                         paid_at=invoice.paid_at)
    invoice.refresh_from_db()
    return invoice


def invoice_from_usage(organization: Organization, *, period_start: date, plan_fee_amount: str | None = None,
                       **options: Any) -> Invoice:
    """An invoice whose usage lines are the period's events, one per (model, department), each the
    exact sum of its events' costs, rounded once."""
    next_month = (period_start.replace(day=28) + timedelta(days=4)).replace(day=1)
    zone = organization.zone
    start, end = local_midnight_of(period_start, zone), local_midnight_of(next_month, zone)
    exact: dict[tuple[int, int], Decimal] = defaultdict(lambda: ZERO)
    tokens: dict[tuple[int, int], int] = defaultdict(int)
    for event in UsageEvent.objects.filter(organization=organization, timestamp__gte=start, timestamp__lt=end):
        exact[event.model_id, event.department_id] += event.cost
        tokens[event.model_id, event.department_id] += event.total_tokens
    lines = [plan_fee(plan_fee_amount)] if plan_fee_amount else []
    for (model_id, department_id), amount in sorted(exact.items()):
        lines.append(usage(Model.objects.get(pk=model_id), Department.objects.get(pk=department_id), str(amount),
                           tokens=tokens[model_id, department_id]))
    return make_invoice(organization, lines, period_start=period_start, **options)


def the_walk_invoice(organization: Organization) -> Invoice:
    """The one invoice of the organization that the endpoint walk names in its URLs."""
    existing = Invoice.objects.filter(organization=organization).order_by("id").first()
    if existing is not None:
        return existing
    return make_invoice(organization, [plan_fee("99.00"), adjustment("1.00")],
                        issued_at=datetime(2026, 4, 1, 2, tzinfo=UTC))
