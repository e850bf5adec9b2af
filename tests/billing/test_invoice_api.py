"""Invoices through the AIone API: alice reads Acme's invoices, their lines and the events behind
each usage line; charlie, from Globex, never finds any of them."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlparse

import pytest

from billing.models import Invoice, InvoiceLine
from billing.money import ZERO, round_display_amount
from tests import factories
from tests.api_helpers import attach, client_for
from tests.billing import invoice_factories as invoices
from usage.services import ingest_events

LIST = "/api/v1/billing/invoices"


def detail_url(invoice: Invoice) -> str:
    return f"{LIST}/{invoice.uuid}"


@pytest.fixture
def acme_invoices(world):
    """Acme's February and March invoices, and Globex's March invoice (in dollars)."""
    qwen = factories.make_model("qwen-plus")
    february = invoices.make_invoice(world.acme, [invoices.plan_fee("99.00")], period_start=date(2026, 2, 1))
    march = invoices.make_invoice(world.acme, [
        invoices.plan_fee("99.00"),
        invoices.usage(qwen, world.research, "12.34567891"),
        invoices.usage(qwen, world.support, "0.12500000"),
        invoices.adjustment("-1.50"),
        invoices.credit("20.00"),
    ], tax_rate="0.06")
    globex = invoices.make_invoice(world.globex, [invoices.plan_fee("19.00")])
    return world, february, march, globex


def test_alice_lists_acmes_invoices_newest_first(acme_invoices, schema_validator):
    world, february, march, globex = acme_invoices
    response = client_for(world.alice).get(LIST)
    assert response.status_code == 200
    body = response.json()
    schema_validator("/api/v1/billing/invoices", "get", body)
    assert [item["invoice_no"] for item in body["items"]] == [march.invoice_no, february.invoice_no]
    assert (body["total"], body["page"], body["page_size"]) == (2, 1, 20)
    first = body["items"][0]
    assert first["id"] == str(march.uuid)
    assert (first["period_start"], first["period_end"]) == ("2026-03-01", "2026-03-31")
    assert first["currency"] == "CNY" and first["status"] == "issued" and first["paid_at"] is None
    # The PDF link is absolute and answers with the PDF.
    pdf_url = urlparse(first["pdf_url"])
    assert pdf_url.scheme == "http" and pdf_url.path == f"{LIST}/{march.uuid}/pdf"
    assert client_for(world.alice).get(pdf_url.path)["Content-Type"] == "application/pdf"


def test_the_list_filters_by_status_and_pages(acme_invoices):
    world, february, march, _ = acme_invoices
    draft = invoices.make_invoice(world.acme, [invoices.plan_fee("99.00")], period_start=date(2026, 4, 1),
                                  status=Invoice.Status.DRAFT)
    alice = client_for(world.alice)
    drafts = alice.get(LIST, {"status": "draft"}).json()
    assert [item["id"] for item in drafts["items"]] == [str(draft.uuid)] and drafts["total"] == 1
    assert drafts["items"][0]["issued_at"] is None
    second = alice.get(LIST, {"page": 2, "page_size": 2}).json()
    assert [item["id"] for item in second["items"]] == [str(february.uuid)]
    assert (second["total"], second["page"], second["page_size"]) == (3, 2, 2)


@pytest.mark.parametrize("query, field", [
    ({"status": "overdue"}, "status"), ({"page": 0}, "page"), ({"page_size": 101}, "page_size"),
], ids=["unknown-status", "page-0", "page-size-101"])
def test_a_bad_list_query_is_a_422_naming_the_field(acme_invoices, query, field):
    world, *_ = acme_invoices
    response = client_for(world.alice).get(LIST, query)
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["query", field]]


def test_the_detail_has_every_line_and_totals_equal_to_their_parts(acme_invoices, schema_validator):
    world, _, march, _ = acme_invoices
    body = client_for(world.alice).get(detail_url(march)).json()
    schema_validator("/api/v1/billing/invoices/{invoice_id}", "get", body)
    lines = body["lines"]
    assert [line["kind"] for line in lines] == ["plan_fee", "usage", "usage", "adjustment", "credit"]
    research = lines[1]
    assert research == {
        "id": str(march.lines.get(department=world.research).uuid), "kind": "usage",
        "description": "qwen-plus · Research", "model": "qwen-plus", "team_id": str(world.research.uuid),
        "quantity": "1500000", "unit": "tokens", "unit_price": None, "amount": "12.35"}
    assert lines[2]["amount"] == "0.13"  # 0.125 rounds half-up, not to even
    assert lines[0]["unit_price"] == "99" and lines[0]["model"] is None and lines[0]["team_id"] is None

    def amount(kinds: set[str]) -> Decimal:
        return sum((Decimal(line["amount"]) for line in lines if line["kind"] in kinds), ZERO)

    subtotal = amount({"plan_fee", "usage", "adjustment"})
    assert Decimal(body["subtotal_rmb"]) == subtotal == Decimal("109.98")
    assert Decimal(body["tax_rmb"]) == round_display_amount(subtotal * Decimal("0.06")) == Decimal("6.60")
    assert Decimal(body["credits_applied_rmb"]) == -amount({"credit"}) == Decimal("20.00")
    assert Decimal(body["amount_rmb"]) == subtotal + Decimal(body["tax_rmb"]) - Decimal(body["credits_applied_rmb"])
    assert body["amount_rmb"] == "96.58"
    assert body["credit_notes"] == []


def test_money_fields_are_rounded_half_up_to_two_places(world):
    # A draft written with more places than an invoice keeps: the API rounds, half-up.
    invoice = Invoice.objects.create(
        organization=world.acme, invoice_no="INV-2026-999999", period_start=date(2026, 5, 1),
        period_end=date(2026, 5, 31), currency="CNY", subtotal=Decimal("10.005"), tax=Decimal("0.605"),
        credits_applied=Decimal("2.125"), amount=Decimal("8.485"))
    body = client_for(world.alice).get(detail_url(invoice)).json()
    assert [body[name] for name in ("subtotal_rmb", "tax_rmb", "credits_applied_rmb", "amount_rmb")] == [
        "10.01", "0.61", "2.13", "8.49"]


def test_a_dollar_invoice_carries_dollars_in_its_rmb_fields(acme_invoices):
    world, *_, globex = acme_invoices
    body = client_for(world.charlie).get(detail_url(globex)).json()
    assert body["currency"] == "USD" and body["subtotal_rmb"] == "19.00" and body["amount_rmb"] == "20.14"


def test_charlie_never_finds_acmes_invoice_its_lines_events_pdf_or_credit_notes(acme_invoices):
    world, _, march, globex = acme_invoices
    charlie = client_for(world.charlie)
    line = march.lines.filter(kind=InvoiceLine.Kind.USAGE).first()
    for method, url, body in [
        ("get", detail_url(march), None),
        ("get", f"{detail_url(march)}/lines/{line.uuid}/events", None),
        ("get", f"{detail_url(march)}/pdf", None),
        ("post", f"{detail_url(march)}/credit-notes", {"amount": "1.00", "reason": "hijack"}),
    ]:
        response = getattr(charlie, method)(url, body, format="json")
        assert response.status_code == 404, (url, response.status_code)
        assert response.json() == {"detail": "Not found."}
    assert [item["id"] for item in charlie.get(LIST).json()["items"]] == [str(globex.uuid)]
    assert march.credit_notes.count() == 0


def test_bob_needs_a_billing_policy_to_read_invoices_and_to_credit_them(acme_invoices):
    world, _, march, _ = acme_invoices
    bob = client_for(world.bob)
    refused = bob.get(detail_url(march))
    assert refused.status_code == 403
    assert refused.json()["action"] == "billing:GetInvoice"
    assert refused.json()["resource"] == f"acs:billing:*:{world.acme.pk}:invoice/{march.pk}"
    assert bob.get(LIST).json()["resource"] == f"acs:billing:*:{world.acme.pk}:invoice/*"

    attach(world.bob, "ReadOnlyAccess")
    assert bob.get(detail_url(march)).status_code == 200
    assert bob.get(f"{detail_url(march)}/pdf").status_code == 200
    write = bob.post(f"{detail_url(march)}/credit-notes", {"amount": "1.00", "reason": "r"}, format="json")
    assert write.status_code == 403 and write.json()["action"] == "billing:CreateCreditNote"


# --- the events behind a usage line ------------------------------------------------------------

def _ingest(key, model, timestamps: list[datetime], *, prefix: str, tokens: int = 1000) -> list[str]:
    events = [factories.event(key, model, request_id=f"{prefix}-{index}", timestamp=at.isoformat(),
                              prompt_tokens=tokens + 37 * index, completion_tokens=311 * index + 7)
              for index, at in enumerate(timestamps)]
    ingest_events(events)
    return [event["request_id"] for event in events]


@pytest.mark.parametrize("persona", ["alice", "charlie"], ids=["Asia/Shanghai", "America/New_York"])
def test_the_events_behind_each_usage_line_page_through_once_and_add_up_to_it(world, persona):
    member = getattr(world, persona)
    organization = member.organization
    zone = organization.zone
    teams = [world.research, world.support] if persona == "alice" else [
        world.sales, factories.make_department(world.globex, "Ops")]
    qwen, deepseek = factories.make_model("qwen-max"), factories.make_model("deepseek-v3", cny=("0.3", "0.1", "0.7",
                                                                                             "0", "0"))
    keys = [factories.make_inference_key(team)[0] for team in teams]
    start = datetime(2026, 3, 1, tzinfo=zone)
    end = datetime(2026, 4, 1, tzinfo=zone)
    # Inside March, local time: the first and last second, and a spread in between (several at
    # one instant, so the keyset's id breaks ties).
    inside = [start, end - timedelta(seconds=1)] + [start + timedelta(hours=7 * n) for n in range(1, 40)] + [
        start + timedelta(days=3)] * 3
    expected: dict[tuple[str, str], set[str]] = {}
    for key, team in zip(keys, teams, strict=True):
        for model in (qwen, deepseek):
            prefix = f"{team.name}-{model.code}"
            expected[model.code, str(team.uuid)] = set(_ingest(key, model, inside, prefix=prefix))
            # One second either side of the month, outside it.
            _ingest(key, model, [start - timedelta(seconds=1), end], prefix=f"{prefix}-outside")
    invoice = invoices.invoice_from_usage(organization, period_start=date(2026, 3, 1), plan_fee_amount="99.00")

    client = client_for(member)
    usage_lines = [line for line in client.get(detail_url(invoice)).json()["lines"] if line["kind"] == "usage"]
    assert len(usage_lines) == 4
    for line in usage_lines:
        seen, costs, cursor, pages = [], [], None, 0
        while True:
            query = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            response = client.get(f"{detail_url(invoice)}/lines/{line['id']}/events", query)
            assert response.status_code == 200, response.content
            page = response.json()
            pages += 1
            assert len(page["items"]) <= 7
            for item in page["items"]:
                assert (item["model"], item["team_id"]) == (line["model"], line["team_id"])
                seen.append(item["request_id"])
                costs.append(Decimal(item["cost"]))
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "an event was served twice"
        assert set(seen) == expected[line["model"], line["team_id"]]
        assert pages == -(-len(seen) // 7)
        stored = InvoiceLine.objects.get(uuid=line["id"])
        assert sum(costs, ZERO) == stored.exact_amount
        assert round_display_amount(sum(costs, ZERO)) == Decimal(line["amount"])


def test_the_events_come_in_time_order_with_iso_timestamps(world, schema_validator):
    qwen = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    times = [datetime(2026, 3, 5, 12, tzinfo=UTC) - timedelta(minutes=n) for n in range(5)]
    ids = _ingest(key, qwen, times, prefix="ordered")
    invoice = invoices.invoice_from_usage(world.acme, period_start=date(2026, 3, 1))
    line = invoice.lines.get()
    body = client_for(world.alice).get(f"{detail_url(invoice)}/lines/{line.uuid}/events").json()
    schema_validator("/api/v1/billing/invoices/{invoice_id}/lines/{line_id}/events", "get", body)
    assert [item["request_id"] for item in body["items"]] == list(reversed(ids))
    assert body["items"][0]["timestamp"] == "2026-03-05T11:56:00Z" and body["next_cursor"] is None
    assert body["items"][0]["cost"] == "0.00365000"  # (1148 × 1 + 1251 × 2) / 10⁶, 8 places


@pytest.fixture
def a_usage_line(world):
    qwen = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    _ingest(key, qwen, [datetime(2026, 3, 5, tzinfo=UTC) + timedelta(minutes=n) for n in range(3)], prefix="few")
    invoice = invoices.invoice_from_usage(world.acme, period_start=date(2026, 3, 1), plan_fee_amount="99.00")
    return world, invoice, invoice.lines.get(kind=InvoiceLine.Kind.USAGE)


def test_a_cursor_that_was_tampered_with_or_belongs_to_another_line_is_a_422(a_usage_line):
    world, invoice, line = a_usage_line
    alice = client_for(world.alice)
    url = f"{detail_url(invoice)}/lines/{line.uuid}/events"
    cursor = alice.get(url, {"limit": 1}).json()["next_cursor"]
    assert alice.get(url, {"cursor": cursor}).status_code == 200
    forged = cursor[:-1] + ("A" if cursor[-1] != "A" else "B")  # the signature no longer matches
    for bad in (forged, "not-a-cursor", cursor + "x"):
        response = alice.get(url, {"cursor": bad})
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


def test_a_cursor_of_one_line_is_refused_on_another(world):
    qwen = factories.make_model("qwen-plus")
    for team in (world.research, world.support):
        key, _ = factories.make_inference_key(team)
        _ingest(key, qwen, [datetime(2026, 3, 5, tzinfo=UTC) + timedelta(minutes=n) for n in range(3)],
                prefix=team.name)
    invoice = invoices.invoice_from_usage(world.acme, period_start=date(2026, 3, 1))
    research, support = (invoice.lines.get(department=team) for team in (world.research, world.support))
    alice = client_for(world.alice)
    cursor = alice.get(f"{detail_url(invoice)}/lines/{research.uuid}/events", {"limit": 1}).json()["next_cursor"]
    response = alice.get(f"{detail_url(invoice)}/lines/{support.uuid}/events", {"cursor": cursor})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("limit", [0, 1001, "many"], ids=["0", "1001", "not-a-number"])
def test_the_event_limit_is_1_to_1000(a_usage_line, limit):
    world, invoice, line = a_usage_line
    response = client_for(world.alice).get(f"{detail_url(invoice)}/lines/{line.uuid}/events", {"limit": limit})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "limit"]


def test_the_default_page_is_a_hundred_events(world):
    qwen = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    _ingest(key, qwen, [datetime(2026, 3, 5, tzinfo=UTC) + timedelta(seconds=n) for n in range(101)], prefix="many")
    invoice = invoices.invoice_from_usage(world.acme, period_start=date(2026, 3, 1))
    url = f"{detail_url(invoice)}/lines/{invoice.lines.get().uuid}/events"
    alice = client_for(world.alice)
    first = alice.get(url).json()
    assert len(first["items"]) == 100 and first["next_cursor"]
    assert len(alice.get(url, {"cursor": first["next_cursor"]}).json()["items"]) == 1


def test_a_line_that_is_not_usage_has_no_events_and_an_unknown_line_is_not_found(a_usage_line):
    world, invoice, _ = a_usage_line
    alice = client_for(world.alice)
    fee = invoice.lines.get(kind=InvoiceLine.Kind.PLAN_FEE)
    response = alice.get(f"{detail_url(invoice)}/lines/{fee.uuid}/events")
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "line_id"]
    other = invoices.make_invoice(world.acme, [invoices.plan_fee("1.00")], period_start=date(2026, 1, 1))
    foreign_line = other.lines.get()
    assert alice.get(f"{detail_url(invoice)}/lines/{foreign_line.uuid}/events").status_code == 404
