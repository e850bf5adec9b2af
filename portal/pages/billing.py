"""The billing pages (API.md §10–§11): the overview (plan, account and balance, credit grants,
budgets, invoices, the ledger), one invoice and its PDF, and the budgets with their forms.

Each page is decided like its API twin, by its main action: the overview by
`billing:GetBillingAccount` (what every member who may see billing at all may see), an invoice by
`billing:GetInvoice`, the budgets by `billing:ListBudgets` / `CreateBudget` / `GetBudget` /
`UpdateBudget` / `DeleteBudget`. The overview's other sections are each the reading of another
API action and are shown only to a member `self.can(...)` take it, so a section never shows what
its own endpoint would refuse.

Reads are the API's own (billing.selectors, billing.budgets, billing.ledger.UsageLedger); budget
input is validated by the API's serializers (billing.api.budgets), so the rules exist once."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core import signing
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from billing import budgets
from billing.api.budgets import BudgetCreate, BudgetUpdate
from billing.ledger import LedgerItem, LedgerPosition, UsageLedger
from billing.models import BillingAccount, Budget, Invoice, LedgerEntry
from billing.pdf import invoice_pdf_filename, render_invoice_pdf
from billing.selectors import (
    account_balance,
    account_currency,
    budgets_of,
    credit_grants,
    current_subscription,
    invoice_credit_notes,
    invoice_lines,
    invoices_of,
    month_to_date_cost,
)
from portal.api.errors import problems_from_drf
from portal.api.permissions import RamTarget, the_object, whole_collection
from portal.pages.door import RamPage

INVOICES_PER_PAGE = 20  # the API's default page_size
GRANTS_PER_PAGE = 20
BUDGETS_PER_PAGE = 25
BUDGETS_ON_OVERVIEW = 5
LEDGER_PER_PAGE = 50
LEDGER_CURSOR_SALT = "portal.billing.ledger"

# Labels of the stored codes, in the reader's language.
ACCOUNT_STATUS = {"active": _("Active"), "suspended": _("Suspended"), "closed": _("Closed")}
INVOICE_STATUS = {"draft": _("Draft"), "issued": _("Issued"), "paid": _("Paid"), "void": _("Void")}
INVOICE_STATUS_BADGE = {"draft": "warn", "issued": "", "paid": "good", "void": "bad"}
LINE_KIND = {"plan_fee": _("Plan fee"), "usage": _("Usage"), "credit": _("Credit"), "adjustment": _("Adjustment")}
GRANT_KIND = {"top_up": _("Top-up"), "grant": _("Credit grant")}
GRANT_STATUS = {"active": _("Active"), "used": _("Used up"), "expired": _("Expired")}
GRANT_STATUS_BADGE = {"active": "good", "used": "", "expired": "bad"}
LEDGER_KIND = {"top_up": _("Top-up"), "grant": _("Credit grant"), "grant_expiry": _("Grant expired"),
               "credit_note": _("Credit note"), "invoice_payment": _("Invoice payment"),
               "adjustment": _("Adjustment")}
BUDGET_SCOPE = {"organization": _("Organization"), "department": _("Department"), "key": _("API key")}
BUDGET_STATUS = {"ok": _("On track"), "warning": _("Warning"), "exhausted": _("Exhausted")}
BUDGET_STATUS_BADGE = {"ok": "good", "warning": "warn", "exhausted": "bad"}


# --- what the templates show ----------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetRow:
    """A budget with its state this period, as the API's Budget shape has it."""

    budget: Budget
    state: budgets.BudgetState
    can_edit: bool = False
    can_delete: bool = False

    @property
    def target_name(self) -> str:
        if self.budget.department_id:
            return self.budget.department.name
        if self.budget.key_id:
            return self.budget.key.name
        return str(_("The whole organization"))

    @property
    def scope_label(self) -> str:
        return str(BUDGET_SCOPE[self.budget.scope])

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def status_label(self) -> str:
        return str(BUDGET_STATUS[self.state.status])

    @property
    def badge(self) -> str:
        return BUDGET_STATUS_BADGE[self.state.status]

    @property
    def bar_pct(self) -> Decimal:
        """The progress bar's width: the progress, capped at a full bar."""
        return min(self.state.progress_pct, Decimal(100))

    @property
    def progress_fraction(self) -> Decimal:
        return self.state.progress_pct / 100


@dataclass(frozen=True)
class LedgerRow:
    at: datetime
    kind: str
    description: str
    amount: Decimal  # what it adds to the balance: a charge is negative
    currency: str
    per_event: bool  # a usage event's cost keeps its 8 places
    request_id: str = ""

    @classmethod
    def of(cls, item: LedgerItem) -> "LedgerRow":
        if isinstance(item, LedgerEntry):
            return cls(item.created_at, str(LEDGER_KIND.get(item.kind, item.kind)), item.note, item.amount,
                       item.currency, per_event=False)
        return cls(item.timestamp, str(_("Usage")),
                   str(_("%(model)s via key %(key)s") % {"model": item.model.code, "key": item.key.name}),
                   -item.cost, item.currency, per_event=True, request_id=item.request_id)


def _labelled_invoice(invoice: Invoice) -> Invoice:
    invoice.status_label = INVOICE_STATUS.get(invoice.status, invoice.status)
    invoice.badge = INVOICE_STATUS_BADGE.get(invoice.status, "")
    return invoice


def _budget_rows(page: RamPage, rows) -> list[BudgetRow]:
    result = []
    for budget in rows:
        target = RamTarget(budget.pk)
        result.append(BudgetRow(budget, budgets.budget_state(budget),
                                can_edit=page.can("billing:GetBudget", target)
                                and page.can("billing:UpdateBudget", target),
                                can_delete=page.can("billing:DeleteBudget", target)))
    return result


def _query_with(request, **changes) -> str:
    """The current query string with some parameters replaced (None drops one), so paging one
    section keeps the others where they were."""
    query = request.GET.copy()
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = str(value)
    return query.urlencode()


# --- the ledger's keyset cursor -----------------------------------------------------------------

def encode_ledger_cursor(position: LedgerPosition) -> str:
    # Signed so that a hand-edited link fails cleanly instead of landing mid-walk somewhere odd.
    return signing.dumps({"at": position.at.isoformat(), "id": position.id, "entry": position.entry},
                         salt=LEDGER_CURSOR_SALT, compress=True)


def decode_ledger_cursor(cursor: str) -> LedgerPosition | None:
    try:
        payload = signing.loads(cursor, salt=LEDGER_CURSOR_SALT)
        at = parse_datetime(payload["at"])
        position = LedgerPosition(at, int(payload["id"]), bool(payload["entry"])) if at else None
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        position = None
    return position


# --- the overview ---------------------------------------------------------------------------------

class BillingPage(RamPage):
    """`/billing/`: decided by billing:GetBillingAccount; each other section by its own action."""

    ram_actions = {"GET": "billing:GetBillingAccount"}
    ram_resource = whole_collection

    def get(self, request):
        organization = request.organization
        account = BillingAccount.objects.get(organization=organization)
        context = {
            "account": account, "currency": account.currency, "balance": account_balance(organization),
            "month_to_date": month_to_date_cost(organization),
            "account_status": ACCOUNT_STATUS.get(account.status, account.status),
        }
        if self.can("billing:GetCurrentPlan"):
            context["show_plan"] = True
            context["subscription"] = current_subscription(organization)
        if self.can("billing:ListCreditGrants"):
            grants = Paginator(credit_grants(organization), GRANTS_PER_PAGE).get_page(request.GET.get("grants_page"))
            for grant in grants:
                grant.kind_label = GRANT_KIND.get(grant.kind, grant.kind)
                grant.status_label = GRANT_STATUS.get(grant.status, grant.status)
                grant.badge = GRANT_STATUS_BADGE.get(grant.status, "")
            context["grants"] = grants
        if self.can("billing:ListBudgets"):
            every_budget = budgets_of(organization)
            context["budgets"] = _budget_rows(self, every_budget[:BUDGETS_ON_OVERVIEW])
            context["budgets_total"] = every_budget.count()
        if self.can("billing:ListInvoices"):
            invoices = Paginator(invoices_of(organization), INVOICES_PER_PAGE).get_page(
                request.GET.get("invoices_page"))
            context["invoices"] = invoices
            context["invoice_rows"] = [(_labelled_invoice(invoice),
                                        self.can("billing:GetInvoice", RamTarget(invoice.pk)))
                                       for invoice in invoices]
        if self.can("billing:ListBillingUsage"):
            context.update(self._ledger(request))
        context.update(self._page_links(request, context))
        return render(request, "portal/billing/overview.html", context)

    def _ledger(self, request) -> dict:
        cursor = request.GET.get("ledger_after")
        position = decode_ledger_cursor(cursor) if cursor else None
        if cursor and position is None:
            messages.warning(request, _("That ledger page link is no longer valid; showing the newest entries."))
        items, next_position = UsageLedger(request.organization, descending=True).after(position, LEDGER_PER_PAGE)
        return {
            "show_ledger": True,
            "ledger": [LedgerRow.of(item) for item in items],
            "ledger_first_page": position is None,
            "ledger_older": _query_with(request, ledger_after=encode_ledger_cursor(next_position))
            if next_position else None,
            "ledger_newest": _query_with(request, ledger_after=None),
        }

    @staticmethod
    def _page_links(request, context) -> dict:
        """Previous/next links of the numbered sections, each keeping the other sections' place."""
        links = {}
        for section, parameter in (("invoices", "invoices_page"), ("grants", "grants_page")):
            page = context.get(section)
            if page is None:
                continue
            links[f"{section}_previous"] = (_query_with(request, **{parameter: page.previous_page_number()})
                                            if page.has_previous() else None)
            links[f"{section}_next"] = (_query_with(request, **{parameter: page.next_page_number()})
                                        if page.has_next() else None)
        return links


# --- one invoice ----------------------------------------------------------------------------------

class OrganizationInvoice(RamPage):
    """An invoice named in the URL, found only in the member's organization (another's is 404),
    checked as `acs:billing:*:<org_id>:invoice/<id>` like the API's."""

    ram_resource = the_object
    lookup_url_kwarg = "invoice_id"

    def get_queryset(self):
        return invoices_of(self.request.organization).select_related("organization")

    def ram_target_of(self, invoice: Invoice) -> RamTarget:
        return RamTarget(invoice.pk)


class InvoicePage(OrganizationInvoice):
    ram_actions = {"GET": "billing:GetInvoice"}

    def get(self, request, invoice_id):
        invoice = _labelled_invoice(self.get_object())
        lines = list(invoice_lines(invoice))
        for line in lines:
            line.kind_label = LINE_KIND.get(line.kind, line.kind)
        return render(request, "portal/billing/invoice.html", {
            "invoice": invoice, "lines": lines, "credit_notes": list(invoice_credit_notes(invoice)),
            "tax_fraction": invoice.tax_rate, "currency": invoice.currency,
            "is_draft": invoice.status == Invoice.Status.DRAFT,
        })


class InvoicePdfPage(OrganizationInvoice):
    """The PDF the API serves (billing.pdf, the same renderer), as a download."""

    ram_actions = {"GET": "billing:GetInvoice"}

    def get(self, request, invoice_id):
        invoice = self.get_object()
        response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{invoice_pdf_filename(invoice)}"'
        return response


# --- budgets ----------------------------------------------------------------------------------------

class BudgetForm(forms.Form):
    """Shows a budget's fields; the API's serializer decides what is valid, so the page and the API
    accept and refuse the same input. Every field is optional here: the serializer says what is
    missing (else each error would be reported twice). Field names are the serializer's."""

    serializer_class: type

    amount = forms.CharField(required=False, max_length=40, label=_("Amount per month"),
                             widget=forms.TextInput(attrs={"inputmode": "decimal", "autocomplete": "off"}))
    thresholds = forms.CharField(required=False, max_length=200, label=_("Alert thresholds (%)"),
                                 help_text=_("Percents of the amount, ascending, separated by commas. "
                                             "Each alerts once a month."))
    hard_limit = forms.BooleanField(required=False, label=_("Hard limit"),
                                    help_text=_("Keys under the budget stop working once it is spent, until the "
                                                "next month starts or the budget is raised."))

    def __init__(self, *args, currency: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["amount"].label = _("Amount per month (%(currency)s)") % {"currency": currency}
        self.validated: dict = {}

    def serializer_input(self) -> dict:
        raise NotImplementedError

    def clean(self):
        cleaned = super().clean()
        serializer = self.serializer_class(data=self.serializer_input())
        if not serializer.is_valid():
            for problem in problems_from_drf(serializer.errors, []):
                field = problem.location[0] if problem.location and problem.location[0] in self.fields else None
                self.add_error(field, problem.message)
        else:
            self.validated = dict(serializer.validated_data)
        return cleaned

    def _thresholds(self) -> list[str]:
        # "50, 80 100" -> ["50", "80", "100"]: the serializer's integer field reads (or refuses) each.
        return self.cleaned_data.get("thresholds", "").replace(",", " ").split()


class BudgetCreateForm(BudgetForm):
    serializer_class = BudgetCreate

    scope = forms.ChoiceField(required=False, label=_("Applies to"), choices=[
        (Budget.Scope.ORGANIZATION, _("The whole organization")), (Budget.Scope.DEPARTMENT, _("A department")),
        (Budget.Scope.KEY, _("An API key"))])
    target_id = forms.CharField(required=False, label=_("Department or key"),
                                help_text=_("Leave empty for a budget of the whole organization."))
    field_order = ["scope", "target_id", "amount", "thresholds", "hard_limit"]

    def __init__(self, *args, organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        departments, keys = budgets.budget_targets(organization)
        self.fields["target_id"].widget = forms.Select(choices=[
            ("", _("— none (whole organization) —")),
            (_("Departments"), [(str(d.uuid), d.name) for d in departments]),
            (_("API keys"), [(str(k.uuid), f"{k.name} · {k.department.name}") for k in keys]),
        ])
        self.fields["thresholds"].initial = ", ".join(str(t) for t in budgets.DEFAULT_THRESHOLDS)

    def serializer_input(self) -> dict:
        data = {name: self.cleaned_data.get(name) for name in ("scope", "amount") if self.cleaned_data.get(name)}
        data["target_id"] = self.cleaned_data.get("target_id") or None
        data["hard_limit"] = bool(self.cleaned_data.get("hard_limit"))
        if self._thresholds():
            data["thresholds"] = self._thresholds()  # else the API's default
        return data

    def clean(self):
        cleaned = super().clean()
        if self.validated:
            # The department or key is looked up in the organization exactly as the API does.
            try:
                self.validated["department"], self.validated["key"] = budgets.budget_target(
                    self.organization, self.validated["scope"], self.validated.pop("target_id"))
            except budgets.UnknownBudgetTarget as unknown:
                self.add_error("target_id", str(unknown))
                self.validated = {}
        return cleaned


class BudgetUpdateForm(BudgetForm):
    serializer_class = BudgetUpdate

    def serializer_input(self) -> dict:
        # Every field is sent: a cleared amount or threshold list is refused, not silently kept.
        return {"amount": self.cleaned_data.get("amount", ""), "thresholds": self._thresholds(),
                "hard_limit": bool(self.cleaned_data.get("hard_limit"))}

    @classmethod
    def initial_of(cls, budget: Budget) -> dict:
        return {"amount": format(budget.amount.normalize(), "f"),
                "thresholds": ", ".join(str(t) for t in budget.thresholds), "hard_limit": budget.hard_limit}


class BudgetsPage(RamPage):
    """`/billing/budgets/`: the list (billing:ListBudgets) and the create form (billing:CreateBudget)."""

    ram_actions = {"GET": "billing:ListBudgets", "POST": "billing:CreateBudget"}
    ram_resource = whole_collection

    def get(self, request):
        form = None
        if self.can("billing:CreateBudget"):
            form = BudgetCreateForm(organization=request.organization, currency=self._currency())
        return self._render(request, form)

    def post(self, request):
        form = BudgetCreateForm(request.POST, organization=request.organization, currency=self._currency())
        if not form.is_valid():
            return self._render(request, form, status=400)
        try:
            budgets.create_budget(actor=self.actor(), organization=request.organization, **form.validated)
        except ValueError as refused:  # the service's own guard; the serializer should have said it first
            form.add_error(None, str(refused))
            return self._render(request, form, status=400)
        messages.success(request, _("Budget created."))
        return HttpResponseRedirect(reverse("portal:billing-budgets"))

    def _currency(self) -> str:
        return account_currency(self.request.organization)

    def _render(self, request, form, status: int = 200):
        page = Paginator(budgets_of(request.organization), BUDGETS_PER_PAGE).get_page(request.GET.get("page"))
        return render(request, "portal/billing/budgets.html", {
            "form": form, "page": page, "rows": _budget_rows(self, page), "currency": self._currency(),
        }, status=status)


class OrganizationBudget(RamPage):
    ram_resource = the_object
    lookup_url_kwarg = "budget_id"

    def get_queryset(self):
        return budgets_of(self.request.organization)

    def ram_target_of(self, budget: Budget) -> RamTarget:
        return RamTarget(budget.pk)


class BudgetPage(OrganizationBudget):
    """`/billing/budgets/<uuid>/`: one budget (billing:GetBudget) and its edit form (billing:UpdateBudget)."""

    ram_actions = {"GET": "billing:GetBudget", "POST": "billing:UpdateBudget"}

    def get(self, request, budget_id):
        budget = self.get_object()
        form = None
        if self.can("billing:UpdateBudget", RamTarget(budget.pk)):
            form = BudgetUpdateForm(initial=BudgetUpdateForm.initial_of(budget), currency=budget.currency)
        return self._render(request, budget, form)

    def post(self, request, budget_id):
        budget = self.get_object()
        form = BudgetUpdateForm(request.POST, currency=budget.currency)
        if not form.is_valid():
            return self._render(request, budget, form, status=400)
        try:
            budgets.update_budget(actor=self.actor(), budget=budget, **form.validated)
        except ValueError as refused:
            form.add_error(None, str(refused))
            return self._render(request, budget, form, status=400)
        messages.success(request, _("Budget saved."))
        return HttpResponseRedirect(reverse("portal:billing-budgets"))

    def _render(self, request, budget: Budget, form, status: int = 200):
        (row,) = _budget_rows(self, [budget])
        return render(request, "portal/billing/budget.html", {"row": row, "form": form, "currency": budget.currency},
                      status=status)


class BudgetDeletePage(OrganizationBudget):
    """`/billing/budgets/<uuid>/delete/` (POST): billing:DeleteBudget."""

    ram_actions = {"POST": "billing:DeleteBudget"}

    def post(self, request, budget_id):
        budgets.delete_budget(actor=self.actor(), budget=self.get_object())
        messages.success(request, _("Budget deleted."))
        return HttpResponseRedirect(reverse("portal:billing-budgets"))


urlpatterns = [
    path("billing/", BillingPage.as_view(), name="billing"),
    path("billing/invoices/<uuid:invoice_id>/", InvoicePage.as_view(), name="billing-invoice"),
    path("billing/invoices/<uuid:invoice_id>/pdf", InvoicePdfPage.as_view(), name="billing-invoice-pdf"),
    path("billing/budgets/", BudgetsPage.as_view(), name="billing-budgets"),
    path("billing/budgets/<uuid:budget_id>/", BudgetPage.as_view(), name="billing-budget"),
    path("billing/budgets/<uuid:budget_id>/delete/", BudgetDeletePage.as_view(), name="billing-budget-delete"),
]
