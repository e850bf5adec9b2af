"""AIone invoices (API.md §3 and §10): the list, one invoice with its lines and credit notes, the
usage events behind a line, the PDF, and credit notes.

Money is a decimal string; `*_rmb` and line amounts are rounded half-up to 2 places by
billing.money and carry the invoice's currency, whatever it is. An invoice is checked as
`acs:billing:*:<org_id>:invoice/<id>`; another organization's invoice is not found (404)."""

from datetime import datetime
from decimal import Decimal

from django.core import signing
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.response import Response

from billing.credit_notes import CreditNoteRefused, issue_credit_note
from billing.models import CreditNote, Invoice, InvoiceLine
from billing.money import ZERO, decimal_string
from billing.pdf import invoice_pdf_filename, render_invoice_pdf
from billing.periods import Period
from billing.selectors import invoice_credit_notes, invoice_lines, invoices_of
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.fields import PageField, PositiveDecimalString, StrictCharField
from portal.api.permissions import RamTarget, whole_collection
from portal.api.schema import AIONE_ERRORS, aione
from portal.api.views import RamAPIView, RamObjectView, parse_body, parse_query, request_actor
from usage.models import UsageEvent
from usage.selectors import events_in

_S = serializers
EVENTS_CURSOR_SALT = "billing.invoice-line-events"


# --- shapes ------------------------------------------------------------------------------------

class InvoiceListQuery(_S.Serializer):
    status = _S.ChoiceField(choices=Invoice.Status.values, required=False)
    page = PageField(required=False, default=1)
    page_size = _S.IntegerField(min_value=1, max_value=100, required=False, default=20)


class LineEventsQuery(_S.Serializer):
    cursor = _S.CharField(required=False, allow_blank=True,
                          help_text="`next_cursor` of the previous page; absent or empty for the first")
    limit = _S.IntegerField(min_value=1, max_value=1000, required=False, default=100)


class CreditNoteCreateRequest(_S.Serializer):
    amount = PositiveDecimalString(places=2, integer_digits=16,
                                   help_text="decimal string > 0, in the invoice's currency, at most 2 places")
    reason = StrictCharField(max_length=500)

    def validate_amount(self, value: Decimal) -> Decimal:
        if value <= ZERO:
            raise _S.ValidationError("must be greater than 0")
        return value


class CreditNoteResponse(_S.Serializer):
    id = _S.UUIDField()
    credit_note_no = _S.CharField()
    invoice_id = _S.UUIDField()
    amount = _S.CharField()
    currency = _S.CharField()
    reason = _S.CharField()
    created_at = _S.DateTimeField()


class InvoiceResponse(_S.Serializer):
    id = _S.UUIDField()
    invoice_no = _S.CharField()
    period_start = _S.DateField()
    period_end = _S.DateField()
    currency = _S.CharField()
    subtotal_rmb = _S.CharField()
    tax_rmb = _S.CharField()
    credits_applied_rmb = _S.CharField()
    amount_rmb = _S.CharField()
    # Not an enum: the choice set would be one more `status` enum colliding with the others.
    status = _S.CharField(help_text="draft, issued, paid or void")
    issued_at = _S.DateTimeField(allow_null=True)
    paid_at = _S.DateTimeField(allow_null=True)
    pdf_url = _S.URLField()


class InvoiceLineResponse(_S.Serializer):
    id = _S.UUIDField()
    kind = _S.ChoiceField(choices=InvoiceLine.Kind.values)
    description = _S.CharField()
    model = _S.CharField(allow_null=True, help_text="the model's code")
    team_id = _S.UUIDField(allow_null=True)
    quantity = _S.CharField()
    unit = _S.CharField()
    unit_price = _S.CharField(allow_null=True)
    amount = _S.CharField()


class InvoiceDetailResponse(InvoiceResponse):
    lines = InvoiceLineResponse(many=True)
    credit_notes = CreditNoteResponse(many=True)


class InvoiceListResponse(_S.Serializer):
    items = InvoiceResponse(many=True)
    total = _S.IntegerField()
    page = _S.IntegerField()
    page_size = _S.IntegerField()


class LineEvent(_S.Serializer):
    request_id = _S.CharField()
    timestamp = _S.DateTimeField()
    model = _S.CharField()
    team_id = _S.UUIDField()
    cost = _S.CharField(help_text="the event's exact cost (8 places), in the invoice's currency")


class LineEventsResponse(_S.Serializer):
    items = LineEvent(many=True)
    next_cursor = _S.CharField(allow_null=True)


def _plain(value: Decimal | None) -> str | None:
    # Quantities and unit prices keep their digits, without trailing zeros or an exponent.
    return None if value is None else format(value.normalize(), "f")


def _timestamp(value: datetime | None) -> str | None:
    return _S.DateTimeField().to_representation(value) if value is not None else None


def invoice_body(invoice: Invoice, request) -> dict:
    return {
        "id": str(invoice.uuid), "invoice_no": invoice.invoice_no, "period_start": invoice.period_start.isoformat(),
        "period_end": invoice.period_end.isoformat(), "currency": invoice.currency,
        "subtotal_rmb": decimal_string(invoice.subtotal), "tax_rmb": decimal_string(invoice.tax),
        "credits_applied_rmb": decimal_string(invoice.credits_applied), "amount_rmb": decimal_string(invoice.amount),
        "status": invoice.status, "issued_at": _timestamp(invoice.issued_at), "paid_at": _timestamp(invoice.paid_at),
        "pdf_url": request.build_absolute_uri(reverse("billing-invoice-pdf", kwargs={"invoice_id": invoice.uuid})),
    }


def line_body(line: InvoiceLine) -> dict:
    return {
        "id": str(line.uuid), "kind": line.kind, "description": line.description,
        "model": line.model.code if line.model_id else None,
        "team_id": str(line.department.uuid) if line.department_id else None,
        "quantity": _plain(line.quantity), "unit": line.unit, "unit_price": _plain(line.unit_price),
        "amount": decimal_string(line.amount),
    }


def credit_note_body(note: CreditNote) -> dict:
    return {"id": str(note.uuid), "credit_note_no": note.credit_note_no, "invoice_id": str(note.invoice.uuid),
            "amount": decimal_string(note.amount), "currency": note.currency, "reason": note.reason,
            "created_at": _timestamp(note.created_at)}


# --- the events behind a usage line -----------------------------------------------------------

def invoice_period_bounds(invoice: Invoice) -> tuple[datetime, datetime]:
    """[start, end) of the invoice's period: local midnights in the organization's timezone."""
    return Period(invoice.period_start, invoice.period_end).bounds(invoice.organization.zone)


def line_events(line: InvoiceLine, *, limit: int, after: tuple[datetime, int] | None) -> tuple[list[UsageEvent], bool]:
    """A keyset page of the events a usage line bills (its model and department, in its period),
    and whether more follow."""
    start, end = invoice_period_bounds(line.invoice)
    events = (events_in(line.invoice.organization_id, start, end, after=after)
              .filter(model_id=line.model_id, department_id=line.department_id)
              .only("pk", "request_id", "timestamp", "cost"))
    page = list(events[: limit + 1])
    return page[:limit], len(page) > limit


def encode_cursor(line: InvoiceLine, event: UsageEvent) -> str:
    # Signed, so a client can neither forge a position nor carry one over to another line.
    return signing.dumps({"line": str(line.uuid), "at": event.timestamp.isoformat(), "id": event.pk},
                         salt=EVENTS_CURSOR_SALT)


def decode_cursor(line: InvoiceLine, cursor: str) -> tuple[datetime, int]:
    try:
        payload = signing.loads(cursor, salt=EVENTS_CURSOR_SALT)
        at = parse_datetime(payload["at"]) if payload.get("line") == str(line.uuid) else None
        event_id = int(payload["id"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        at = None
    if at is None:
        raise InvalidRequest([FieldProblem(["query", "cursor"], "not a cursor of this line's events",
                                           "value_error.cursor")])
    return at, event_id


# --- views -------------------------------------------------------------------------------------

class OrganizationInvoices:
    lookup_url_kwarg = "invoice_id"

    def get_queryset(self) -> QuerySet[Invoice]:
        return invoices_of(self.request.organization).select_related("organization")

    def ram_target_of(self, invoice: Invoice) -> RamTarget:
        return RamTarget(invoice.pk)


class InvoiceListView(RamAPIView):
    ram_actions = {"GET": "billing:ListInvoices"}
    ram_resource = whole_collection

    @aione(InvoiceListResponse, parameters=[InvoiceListQuery])
    def get(self, request):
        query = parse_query(InvoiceListQuery, request)
        invoices = invoices_of(request.organization, status=query.get("status"))
        start = (query["page"] - 1) * query["page_size"]
        page = invoices[start : start + query["page_size"]]
        return Response({"items": [invoice_body(invoice, request) for invoice in page], "total": invoices.count(),
                         "page": query["page"], "page_size": query["page_size"]})


class InvoiceDetailView(OrganizationInvoices, RamObjectView):
    ram_actions = {"GET": "billing:GetInvoice"}

    @aione(InvoiceDetailResponse, description="One invoice with its lines (by model and team) and credit notes.")
    def get(self, request, invoice_id):
        invoice = self.get_object()
        return Response({**invoice_body(invoice, request),
                         "lines": [line_body(line) for line in invoice_lines(invoice)],
                         "credit_notes": [credit_note_body(note) for note in invoice_credit_notes(invoice)]})


class InvoiceLineEventsView(OrganizationInvoices, RamObjectView):
    ram_actions = {"GET": "billing:GetInvoice"}

    @aione(LineEventsResponse, parameters=[LineEventsQuery], description=(
        "The usage events a usage line bills, keyset-paged in (timestamp, id) order: its model and team, "
        "in the invoice's period in the organization's timezone. Their costs add up to the line before "
        "rounding."))
    def get(self, request, invoice_id, line_id):
        invoice = self.get_object()
        line = get_object_or_404(invoice.lines.select_related("model", "department"), uuid=line_id)
        line.invoice = invoice  # already loaded, with its organization
        if line.kind != InvoiceLine.Kind.USAGE:
            raise InvalidRequest([FieldProblem(["path", "line_id"], f"a {line.kind} line has no usage events",
                                               "value_error.not_usage")])
        query = parse_query(LineEventsQuery, request)
        after = decode_cursor(line, query["cursor"]) if query.get("cursor") else None
        events, more = line_events(line, limit=query["limit"], after=after)
        model = line.model.code if line.model_id else None
        team_id = str(line.department.uuid) if line.department_id else None
        return Response({
            "items": [{"request_id": event.request_id, "timestamp": _timestamp(event.timestamp), "model": model,
                       "team_id": team_id, "cost": str(event.cost)} for event in events],
            "next_cursor": encode_cursor(line, events[-1]) if more else None,
        })


class JsonErrorsOnly(BaseContentNegotiation):
    """The PDF is answered as it is; errors are JSON whatever the client's Accept header says
    (a client asking for application/pdf must still read its 404 or 403)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class InvoicePdfView(OrganizationInvoices, RamObjectView):
    ram_actions = {"GET": "billing:GetInvoice"}
    content_negotiation_class = JsonErrorsOnly

    @extend_schema(responses={(200, "application/pdf"): OpenApiTypes.BINARY, **AIONE_ERRORS},
                   description="The invoice as a PDF in the organization's language.")
    def get(self, request, invoice_id):
        invoice = self.get_object()
        response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{invoice_pdf_filename(invoice)}"'
        return response


class InvoiceCreditNotesView(OrganizationInvoices, RamObjectView):
    ram_actions = {"POST": "billing:CreateCreditNote"}

    @aione(CreditNoteResponse, request=CreditNoteCreateRequest, status=201, description=(
        "Issue a credit note on an issued or paid invoice, with a `credit_note` ledger entry that raises the "
        "balance. The credit notes of an invoice never add up to more than its `amount_rmb` (422)."))
    def post(self, request, invoice_id):
        invoice = self.get_object()
        data = parse_body(CreditNoteCreateRequest, request)
        try:
            note = issue_credit_note(actor=request_actor(request), invoice=invoice, amount=data["amount"],
                                     reason=data["reason"])
        except CreditNoteRefused as refused:
            location = ["body", refused.field] if refused.field == "amount" else ["path", "invoice_id"]
            raise InvalidRequest([FieldProblem(location, str(refused), "value_error.credit_note")]) from refused
        return Response(credit_note_body(note), status=status.HTTP_201_CREATED)
