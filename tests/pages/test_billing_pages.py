"""The billing pages (API.md §10–§11), told as Acme's April: a Team plan since March, a welcome
credit, March's usage invoiced by the nightly job, some April usage under a budget. alice (owner)
sees and changes everything; bob (usage only) is refused with the action named; charlie (Globex)
never sees any of it and finds none of Acme's invoice or budget URLs."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from billing.budgets import create_budget
from billing.invoicing import run_billing
from billing.ledger import LedgerPosition, UsageLedger
from billing.models import BillingAccount, Budget, Invoice, LedgerEntry
from billing.money import format_money
from billing.selectors import account_balance
from billing.services import grant_credit, record_usage, subscribe
from portal.ram import services as ram
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import attach, client_for
from tests.billing.invoice_factories import make_invoice, plan_fee
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db

APRIL_10 = datetime(2026, 4, 10, 4, 0, tzinfo=UTC)  # noon in Shanghai
MARCH_10 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
# With the model's prices (1 and 2 CNY per million tokens), one event costs 1.234567 + 0.691356.
EVENT_COST = Decimal("1.925923")
PROMPT, COMPLETION = 1_234_567, 345_678


def cny(amount) -> str:
    return format_money(Decimal(amount), "CNY", "en")


def cny_event(amount) -> str:
    return format_money(Decimal(amount), "CNY", "en", per_event=True)


def _spend(key, model, count: int, at: datetime, prefix: str) -> list[str]:
    events = [factories.event(key, model, request_id=f"{prefix}-{n:03d}",
                              timestamp=(at + timedelta(seconds=n)).isoformat(), prompt_tokens=PROMPT,
                              completion_tokens=COMPLETION) for n in range(count)]
    record_usage(events)
    return [event["request_id"] for event in events]


@pytest.fixture
def frozen():
    with time_machine.travel(APRIL_10, tick=False):
        yield


@pytest.fixture
def acme(world, frozen):
    """Acme on the Team plan since March, with a welcome credit, March invoiced, April under way."""
    account = BillingAccount.objects.get(organization=world.acme)
    account.tax_rate = Decimal("0.06")
    account.billing_email = "finance@acme.test"
    account.save()
    plan = factories.make_plan("team", name="Team", monthly_fee=Decimal("99"))
    # From Shanghai's midnight on 1 March, so March's fee is a whole month.
    subscribe(actor=SYSTEM, organization=world.acme, plan=plan,
              started_at=datetime(2026, 3, 1, tzinfo=UTC) - timedelta(hours=8))
    world.grant = grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("500"), note="Welcome credit",
                               at=datetime(2026, 3, 1, 1, tzinfo=UTC), expires_at=datetime(2026, 6, 30, tzinfo=UTC))
    model = factories.make_model("qwen-plus")
    world.key, _ = factories.make_inference_key(world.research, name="research-bot")
    world.model = model
    _spend(world.key, model, 3, MARCH_10, "march")
    with time_machine.travel(datetime(2026, 4, 2, 1, tzinfo=UTC), tick=False):
        run_billing(date=date(2026, 4, 2))
    world.invoice = Invoice.objects.get(organization=world.acme)
    _spend(world.key, model, 2, APRIL_10 - timedelta(hours=2), "april")
    world.budget = create_budget(actor=SYSTEM, organization=world.acme, scope=Budget.Scope.ORGANIZATION,
                                 amount=Decimal("10"), thresholds=[50, 80, 100])
    return world


def _login(client, member):
    client.force_login(member.user)
    return client


# --- the overview -----------------------------------------------------------------------------------

def test_overview_shows_the_balance_plan_grants_budget_invoice_and_ledger(client, acme):
    body = _login(client, acme.alice).get("/billing/").content.decode()

    # The balance is the ledger's sum: the credit, less five events.
    expected_balance = Decimal("500") - 5 * EVENT_COST
    assert account_balance(acme.acme).balance == expected_balance
    balance = re.search(r'data-testid="balance">([^<]+)<', body).group(1)
    assert balance == cny(expected_balance) == "CN¥490.37"
    assert cny(2 * EVENT_COST) in body  # spent this month (April)
    # The plan, and the grant with what is left of it and its expiry.
    assert "Team" in body and cny("99") in body
    grants = body.split('data-testid="grants-table"')[1].split("</table>")[0]
    assert "Welcome credit" in grants and cny("500") in grants and cny(expected_balance) in grants
    assert "06/30/2026 8 a.m." in grants  # expiry, in Shanghai's clock (08:00 on 30 June)
    # The budget: 3.85 of 10.00 spent this month, 38.5 %.
    budgets = body.split('data-testid="budgets-table"')[1].split("</table>")[0]
    assert cny(Decimal("3.85")) in budgets and cny("10") in budgets and "38.5%" in budgets
    assert 'inline-size: 38.52%' in budgets
    # March's invoice: plan fee + usage (5.78), 6 % tax.
    invoice = acme.invoice
    assert invoice.subtotal == Decimal("99") + Decimal("5.78") and invoice.tax == Decimal("6.29")
    invoices = body.split('data-testid="invoices-table"')[1].split("</table>")[0]
    assert invoice.invoice_no in invoices and cny(invoice.amount) in invoices and cny("6.29") in invoices
    assert f'href="/billing/invoices/{invoice.uuid}/pdf" data-testid="invoice-pdf"' in invoices
    # The ledger: each charge to the 8th place, the credit to the cent, newest first.
    ledger = body.split('data-testid="ledger-table"')[1].split("</table>")[0]
    assert cny_event(-EVENT_COST) in ledger and "-CN¥1.92592300" in ledger
    assert "Welcome credit" in ledger and "CN¥500.00" in ledger
    assert ledger.index("april-001") < ledger.index("april-000") < ledger.index("march-002")
    assert ledger.index("march-000") < ledger.index("Welcome credit")


def test_the_overview_is_decided_by_get_billing_account_and_bob_is_refused_naming_it(client, acme):
    attach(acme.bob, "UsageReadOnlyAccess")
    response = _login(client, acme.bob).get("/billing/")
    assert response.status_code == 403
    assert b"billing:GetBillingAccount" in response.content and b'data-testid="denied-action"' in response.content
    assert cny(acme.invoice.amount).encode() not in response.content


@pytest.mark.parametrize(("path", "action"), [
    ("/billing/budgets/", "billing:ListBudgets"),
    ("/billing/invoices/{invoice}/", "billing:GetInvoice"),
    ("/billing/invoices/{invoice}/pdf", "billing:GetInvoice"),
    ("/billing/budgets/{budget}/", "billing:GetBudget"),
], ids=["budgets", "invoice", "pdf", "budget"])
def test_bob_is_refused_every_billing_page_with_its_action_named(client, acme, path, action):
    attach(acme.bob, "UsageReadOnlyAccess")
    url = path.format(invoice=acme.invoice.uuid, budget=acme.budget.uuid)
    response = _login(client, acme.bob).get(url)
    assert response.status_code == 403
    assert f'data-testid="denied-action">{action}<'.encode() in response.content


def test_each_section_is_shown_only_to_a_member_its_own_action_allows(client, acme):
    """A member who may read the account and list invoices, and nothing else of billing."""
    policy = ram.create_policy(actor=SYSTEM, organization=acme.acme, name="AccountAndInvoiceList", document={
        "Version": "1", "Statement": [{"Effect": "Allow", "Action": ["billing:GetBillingAccount",
                                                                     "billing:ListInvoices"], "Resource": "*"}]})
    ram.attach_policy(actor=SYSTEM, policy=policy, member=acme.bob)
    body = _login(client, acme.bob).get("/billing/").content.decode()
    assert 'data-testid="balance"' in body and 'data-testid="invoices-table"' in body
    assert acme.invoice.invoice_no in body
    # No GetInvoice: the number is shown, but neither the link nor the PDF.
    assert f"/billing/invoices/{acme.invoice.uuid}/" not in body and 'data-testid="invoice-pdf"' not in body
    for hidden in ('data-testid="plan"', 'data-testid="grants-table"', 'data-testid="budgets-table"',
                   'data-testid="ledger-table"', "Welcome credit"):
        assert hidden not in body


def test_charlie_sees_only_globex_and_none_of_acmes_amounts(client, acme):
    body = _login(client, acme.charlie).get("/billing/").content.decode()
    assert 'data-testid="balance">$0.00<' in body  # Globex: USD, nothing yet
    for acme_thing in (acme.invoice.invoice_no, "Welcome credit", "research-bot", "march-000", cny("500"),
                       cny(acme.invoice.amount), "CN¥"):
        assert acme_thing not in body


@pytest.mark.parametrize("path", ["/billing/invoices/{invoice}/", "/billing/invoices/{invoice}/pdf",
                                  "/billing/budgets/{budget}/"], ids=["invoice", "pdf", "budget"])
def test_acmes_invoice_and_budget_urls_are_not_found_for_charlie(client, acme, path):
    response = _login(client, acme.charlie).get(path.format(invoice=acme.invoice.uuid, budget=acme.budget.uuid))
    assert response.status_code == 404
    assert acme.invoice.invoice_no.encode() not in response.content


def test_charlie_can_neither_change_nor_delete_acmes_budget(client, acme):
    _login(client, acme.charlie)
    assert client.post(f"/billing/budgets/{acme.budget.uuid}/", {"amount": "1", "thresholds": "50"}).status_code == 404
    assert client.post(f"/billing/budgets/{acme.budget.uuid}/delete/").status_code == 404
    acme.budget.refresh_from_db()
    assert acme.budget.amount == Decimal("10")


def test_an_organization_with_nothing_yet_shows_what_comes_next(client, world):
    body = _login(client, world.charlie).get("/billing/").content.decode()
    assert "No invoices yet." in body and "Your first invoice is issued after the month ends" in body
    assert "No credit grants yet." in body and "No budgets yet." in body and "No money has moved yet." in body
    assert "No current plan." in body
    for table in ("invoices-table", "ledger-table", "budgets-table", "grants-table"):
        assert f'data-testid="{table}"' not in body


def test_invoices_are_paged_newest_period_first(client, world):
    for month in range(1, 23):  # 22 months of 2024-2025
        make_invoice(world.acme, [plan_fee(f"{month}.00")], period_start=date(2024 + (month - 1) // 12,
                                                                               (month - 1) % 12 + 1, 1))
    _login(client, world.alice)
    first = client.get("/billing/").content.decode()
    numbers = re.findall(r"INV-\d{4}-\d{6}", first.split('data-testid="invoices-table"')[1].split("</table>")[0])
    assert len(numbers) == 20 and cny("22") in first and cny("2") not in first.replace(cny("22"), "")
    older = re.search(r'href="\?([^"]+)" rel="next">Older invoices', first).group(1).replace("&amp;", "&")
    second = client.get(f"/billing/?{older}").content.decode()
    rows = second.split('data-testid="invoices-table"')[1].split("</table>")[0]
    assert cny("1") in rows and cny("2") in rows and cny("22") not in rows


# --- the ledger, by keyset ------------------------------------------------------------------------

def _ledger_rows(body: str) -> list[str]:
    table = body.split('data-testid="ledger-table"')[1].split("</table>")[0]
    return re.findall(r"<tr>\s*<td class=\"num\"><time[^>]*>[^<]*</time></td>\s*<td>([^<]*)</td>\s*<td>([^<]*)</td>"
                      r"\s*<td class=\"mono\">([^<]*)</td>", table)


def test_the_ledger_pages_through_every_entry_by_its_older_link(client, world, frozen):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    start = APRIL_10 - timedelta(days=1)
    # A credit at the very instant of an event: money arrives before it is spent.
    grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("5"), note="Top-up at the tie", at=start +
                 timedelta(seconds=49))
    _spend(key, model, 120, start, "event")
    _login(client, world.alice)
    seen, url, pages = [], "/billing/", 0
    while url:
        body = client.get(url).content.decode()
        seen.extend(_ledger_rows(body))
        pages += 1
        older = re.search(r'href="\?([^"]+)" rel="next" data-testid="ledger-older"', body)
        url = f"/billing/?{older.group(1).replace('&amp;', '&')}" if older else None
    assert pages == 3  # 121 entries, 50 a page
    walk = list(UsageLedger(world.acme, descending=True).stream())
    assert [row[2] or row[1] for row in seen] == [
        item.note if isinstance(item, LedgerEntry) else item.request_id for item in walk]
    assert [row[2] for row in seen][:3] == ["event-119", "event-118", "event-117"]
    # The tie is kept where the walk keeps it (the credit listed before the event of its instant),
    # however the pages fall.
    names = [row[2] or row[1] for row in seen]
    assert names.index("Top-up at the tie") == names.index("event-049") - 1


def test_a_tampered_ledger_link_starts_again_from_the_newest(client, world, frozen):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    _spend(key, model, 2, APRIL_10 - timedelta(hours=1), "event")
    body = _login(client, world.alice).get("/billing/?ledger_after=forged").content.decode()
    assert [row[2] for row in _ledger_rows(body)] == ["event-001", "event-000"]
    assert "no longer valid" in body


@pytest.mark.parametrize("descending", [True, False], ids=["newest-first", "oldest-first"])
@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_usage_ledger_keyset_pages_join_up_to_the_whole_walk(world, descending, limit):
    model = factories.make_model("qwen-plus")
    key, _ = factories.make_inference_key(world.research)
    at = datetime(2026, 3, 1, 4, tzinfo=UTC)
    _spend(key, model, 3, at, "a")  # at, at+1s, at+2s
    for n, second in enumerate((0, 1, 1, 5)):  # entries tied with events, two at one instant, one after all
        grant_credit(actor=SYSTEM, organization=world.acme, amount=Decimal("1"), note=f"credit-{n}",
                     at=at + timedelta(seconds=second))
    ledger = UsageLedger(world.acme, descending=descending)
    whole = [(type(item).__name__, item.pk) for item in ledger.stream()]
    assert len(whole) == 7
    walked, position = [], None
    while True:
        items, position = ledger.after(position, limit)
        walked.extend((type(item).__name__, item.pk) for item in items)
        if position is None:
            break
        assert isinstance(position, LedgerPosition)
    assert walked == whole


# --- one invoice and its PDF ------------------------------------------------------------------------

def test_invoice_page_shows_lines_totals_tax_status_and_credit_notes(client, acme):
    from billing.credit_notes import issue_credit_note

    issue_credit_note(actor=SYSTEM, invoice=acme.invoice, amount=Decimal("4.50"), reason="Outage on 12 March")
    response = _login(client, acme.alice).get(f"/billing/invoices/{acme.invoice.uuid}/")
    assert response.status_code == 200
    body = response.content.decode()
    invoice = acme.invoice
    lines = body.split('data-testid="invoice-lines"')[1].split("</table>")[0]
    assert "Plan fee" in lines and "Team plan, 2026-03" in lines and cny("99") in lines
    assert "qwen-plus" in lines and "Research" in lines and cny("5.78") in lines  # 3 × 1.925923, rounded once
    totals = body.split('data-testid="invoice-totals"')[1]
    assert cny("104.78") in totals and "Tax (6.00%)" in totals and cny("6.29") in totals
    assert re.search(r'data-testid="invoice-total"><strong>([^<]+)<', body).group(1) == cny(invoice.amount) \
        == "CN¥111.07"
    assert 'data-testid="invoice-status">Issued<' in body
    notes = body.split('data-testid="credit-notes-table"')[1].split("</table>")[0]
    assert "CN-2026-" in notes and "Outage on 12 March" in notes and cny("4.50") in notes
    assert f'href="/billing/invoices/{invoice.uuid}/pdf" data-testid="invoice-pdf"' in body


def test_the_pdf_download_is_the_apis_pdf_as_an_attachment(client, acme):
    page = _login(client, acme.alice).get(f"/billing/invoices/{acme.invoice.uuid}/pdf")
    assert page.status_code == 200 and page["Content-Type"] == "application/pdf"
    assert page["Content-Disposition"] == f'attachment; filename="{acme.invoice.invoice_no}.pdf"'
    assert page.content.startswith(b"%PDF")
    api = client_for(acme.alice).get(f"/api/v1/billing/invoices/{acme.invoice.uuid}/pdf")
    assert api.status_code == 200
    assert page.content == api.content


# --- budgets ------------------------------------------------------------------------------------------

def test_budgets_page_lists_thresholds_and_state_with_controls_for_those_allowed(client, acme):
    create_budget(actor=SYSTEM, organization=acme.acme, scope=Budget.Scope.DEPARTMENT, department=acme.research,
                  amount=Decimal("3"), thresholds=[25, 75], hard_limit=True)
    body = _login(client, acme.alice).get("/billing/budgets/").content.decode()
    table = body.split('data-testid="budgets-table"')[1].split("</table>")[0]
    assert "50%, 80%, 100%" in table and "25%, 75%" in table
    assert "Research" in table and "Exhausted" in table and "Warning" not in table  # 3.85 of 3.00
    assert "On track" in table  # 3.85 of 10.00 is below the first threshold (50 %)
    assert f"/billing/budgets/{acme.budget.uuid}/delete/" in table and 'data-testid="budget-form"' in body


def test_a_read_only_member_sees_budgets_without_controls_and_cannot_post(client, acme):
    attach(acme.bob, "ReadOnlyAccess")
    _login(client, acme.bob)
    body = client.get("/billing/budgets/").content.decode()
    assert 'data-testid="budgets-table"' in body and cny("10") in body
    assert 'data-testid="budget-form"' not in body and "/delete/" not in body and "Edit" not in body
    response = client.post("/billing/budgets/", {"scope": "organization", "amount": "5"})
    assert response.status_code == 403 and b"billing:CreateBudget" in response.content
    response = client.post(f"/billing/budgets/{acme.budget.uuid}/delete/")
    assert response.status_code == 403 and b"billing:DeleteBudget" in response.content
    response = client.post(f"/billing/budgets/{acme.budget.uuid}/", {"amount": "1", "thresholds": "50"})
    assert response.status_code == 403 and b"billing:UpdateBudget" in response.content
    assert Budget.objects.filter(organization=acme.acme).count() == 1
    acme.budget.refresh_from_db()
    assert acme.budget.amount == Decimal("10")


def test_creating_a_budget_on_a_department(client, acme):
    _login(client, acme.alice)
    response = client.post("/billing/budgets/", {"scope": "department", "target_id": str(acme.support.uuid),
                                                 "amount": "250.50", "thresholds": "60, 90", "hard_limit": "on"})
    assert response.status_code == 302 and response["Location"] == "/billing/budgets/"
    budget = Budget.objects.get(organization=acme.acme, department=acme.support)
    assert (budget.amount, budget.thresholds, budget.hard_limit, budget.currency) == (
        Decimal("250.5"), [60, 90], True, "CNY")
    page = client.get("/billing/budgets/").content.decode()
    assert "Budget created." in page and cny("250.50") in page


def test_a_budget_left_at_the_default_thresholds_gets_the_apis_default(client, acme):
    _login(client, acme.alice)
    client.post("/billing/budgets/", {"scope": "key", "target_id": str(acme.key.uuid), "amount": "1", "thresholds": ""})
    assert Budget.objects.get(key=acme.key).thresholds == [50, 80, 100]


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"scope": "organization", "amount": "0"}, "amount", "greater than or equal to"),
    ({"scope": "organization", "amount": "ten"}, "amount", "A valid number is required."),
    ({"scope": "organization"}, "amount", "This field is required."),
    ({"scope": "organization", "amount": "5", "thresholds": "80, 50"}, "thresholds", "ascending and distinct"),
    ({"scope": "organization", "amount": "5", "thresholds": "50, 120"}, "thresholds", "less than or equal to 100"),
    ({"scope": "organization", "amount": "5", "thresholds": "half"}, "thresholds", "A valid integer is required."),
    ({"scope": "department", "amount": "5"}, "target_id", "null for an organization budget"),
    ({"scope": "planet", "amount": "5"}, "scope", "Select a valid choice"),
], ids=["zero", "not-a-number", "missing-amount", "descending", "over-100", "not-a-percent", "no-department",
        "unknown-scope"])
def test_an_invalid_budget_is_refused_next_to_its_field_and_nothing_is_stored(client, acme, fields, field, message):
    _login(client, acme.alice)
    response = client.post("/billing/budgets/", fields)
    assert response.status_code == 400
    errors = re.search(rf'<ul class="errorlist" data-field="{field}">(.*?)</ul>', response.content.decode(), re.S)
    assert errors and message in errors.group(1)
    assert Budget.objects.filter(organization=acme.acme).count() == 1


def test_another_organizations_department_is_an_unknown_target(client, acme):
    _login(client, acme.alice)
    response = client.post("/billing/budgets/", {"scope": "department", "target_id": str(acme.sales.uuid),
                                                 "amount": "5"})
    assert response.status_code == 400 and b"unknown department" in response.content
    assert not Budget.objects.filter(department=acme.sales).exists()


def test_the_page_and_the_api_refuse_the_same_input_with_the_same_message(client, acme):
    api = client_for(acme.alice).post("/api/v1/billing/budgets", {"scope": "organization", "amount": "5",
                                                                  "thresholds": [80, 50]}, format="json")
    assert api.status_code == 422
    (problem,) = api.json()["detail"]
    page = _login(client, acme.alice).post("/billing/budgets/", {"scope": "organization", "amount": "5",
                                                                 "thresholds": "80, 50"})
    assert problem["msg"] in page.content.decode()


def test_editing_a_budget(client, acme):
    _login(client, acme.alice)
    form = client.get(f"/billing/budgets/{acme.budget.uuid}/").content.decode()
    assert 'value="10"' in form and 'value="50, 80, 100"' in form
    response = client.post(f"/billing/budgets/{acme.budget.uuid}/", {"amount": "3.5", "thresholds": "90",
                                                                     "hard_limit": "on"})
    assert response.status_code == 302
    acme.budget.refresh_from_db()
    assert (acme.budget.amount, acme.budget.thresholds, acme.budget.hard_limit) == (Decimal("3.5"), [90], True)
    assert acme.budget.exhausted_period == date(2026, 4, 1)  # 3.85 spent: the hard limit holds at once
    assert "Budget saved." in client.get("/billing/budgets/").content.decode()


@pytest.mark.parametrize(("fields", "field"), [
    ({"amount": "-5", "thresholds": "50"}, "amount"),
    ({"amount": "", "thresholds": "50"}, "amount"),
    ({"amount": "5", "thresholds": ""}, "thresholds"),
    ({"amount": "5", "thresholds": "100, 100"}, "thresholds"),
], ids=["negative", "cleared-amount", "no-thresholds", "repeated"])
def test_an_invalid_edit_changes_nothing(client, acme, fields, field):
    _login(client, acme.alice)
    response = client.post(f"/billing/budgets/{acme.budget.uuid}/", fields)
    assert response.status_code == 400
    assert f'data-field="{field}"' in response.content.decode()
    acme.budget.refresh_from_db()
    assert (acme.budget.amount, acme.budget.thresholds, acme.budget.hard_limit) == (Decimal("10"), [50, 80, 100],
                                                                                    False)


def test_deleting_a_budget(client, acme):
    _login(client, acme.alice)
    page = client.get("/billing/budgets/").content.decode()
    assert "data-confirm=" in page.split(f"/billing/budgets/{acme.budget.uuid}/delete/")[1][:200]
    response = client.post(f"/billing/budgets/{acme.budget.uuid}/delete/")
    assert response.status_code == 302
    assert not Budget.objects.filter(pk=acme.budget.pk).exists()
    page = client.get("/billing/budgets/").content.decode()
    assert "Budget deleted." in page and "No budgets yet." in page


def test_deleting_is_a_post_only(client, acme):
    response = _login(client, acme.alice).get(f"/billing/budgets/{acme.budget.uuid}/delete/")
    assert response.status_code == 405
    assert Budget.objects.filter(pk=acme.budget.pk).exists()


def test_anonymous_visitors_are_sent_to_login(client, acme):
    for path in ("/billing/", f"/billing/invoices/{acme.invoice.uuid}/pdf", "/billing/budgets/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_the_ledger_counts_every_event_once(acme):
    # The fixture's own story: five charges and one credit.
    assert UsageEvent.objects.filter(organization=acme.acme).count() == 5
    assert LedgerEntry.objects.filter(organization=acme.acme).count() == 1


@pytest.mark.parametrize("language", ["zh-hans", "ko", "ar"])
def test_every_billing_page_renders_in_each_language_with_money_in_its_currency(client, acme, language):
    acme.alice.language = language
    acme.alice.save()
    _login(client, acme.alice)
    for path in ("/billing/", f"/billing/invoices/{acme.invoice.uuid}/", "/billing/budgets/",
                 f"/billing/budgets/{acme.budget.uuid}/"):
        response = client.get(path)
        assert response.status_code == 200, path
        body = response.content.decode()
        assert f'<html lang="{language}"' in body
        locale = {"zh-hans": "zh_Hans", "ko": "ko", "ar": "ar"}[language]
        if path == "/billing/":
            balance = re.search(r'data-testid="balance">([^<]+)<', body).group(1)
            assert balance == format_money(Decimal("500") - 5 * EVENT_COST, "CNY", locale)
