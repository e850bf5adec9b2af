"""Billing in the admin: the catalog (read by every org admin), accounts, grants, the ledger,
budgets, webhooks, invoices and credit notes.

Money is shown as money (2 places, in the reader's language, through portal_format's filters);
only a single event's cost keeps all 8 places (usage.admin), and a unit price keeps the digits it
has. Nothing that carries the ledger (accounts, grants, entries, invoices, credit notes) is
deleted by an org admin, one by one or in bulk. Operators (platform superusers) issue or void
draft invoices and grant credit here, through the same services as the API and the nightly job."""

from collections.abc import Callable
from decimal import Decimal
from operator import attrgetter
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.validators import MinValueValidator
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from billing import budgets
from billing.invoicing import InvoicingError, issue_draft_invoice, void_draft_invoice
from billing.models import (
    BillingAccount,
    Budget,
    BudgetAlert,
    CreditGrant,
    CreditNote,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Model,
    Plan,
    Price,
    Subscription,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
)
from billing.money import round_display_amount
from billing.pdf import invoice_pdf_filename, render_invoice_pdf
from billing.services import grant_credit
from billing.webhooks import delete_webhook
from portal.admin_scoping import FactsAdmin, OrganizationScopedAdmin, ShownFormatted, admin_actor, admin_organization
from portal.templatetags.portal_format import event_money, money


def shown_as_money(currency: str = "currency", *, per_event: bool = False) -> Callable[[Any, Any], str]:
    """A display format (ShownFormatted.display_formats) for an amount whose currency is the
    object's attribute `currency` (a dotted path), in the active language."""
    currency_of = attrgetter(currency)
    formatter = event_money if per_event else money
    return lambda obj, value: formatter(value, currency_of(obj))


def shown_as_unit_price(currency: str = "currency") -> Callable[[Any, Any], str]:
    """A unit price keeps every digit it has (a price per token, a fee prorated by days), with at
    least the 2 places of money: as the invoice PDF prints it."""
    currency_of = attrgetter(currency)

    def render(obj: Any, value: Decimal) -> str:
        exact = value == round_display_amount(value)
        return (money if exact else event_money)(value, currency_of(obj))

    return render


class NoBulkDelete:
    """Ledger-bearing rows: Django's "delete selected" is offered to no one but superusers."""

    def get_actions(self, request: HttpRequest) -> Any:
        actions = super().get_actions(request)
        if not request.user.is_superuser:
            actions.pop("delete_selected", None)
        return actions


class OperatorsOnly:
    """`allowed_permissions=["operator"]` on an action: platform superusers only."""

    def has_operator_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser


class CatalogAdmin(OrganizationScopedAdmin):
    """The shared catalog: every org admin may read it, only platform superusers change it."""

    organization_path = None
    read_only_for_org_admins = True


class PriceInline(ShownFormatted, admin.TabularInline):
    model = Price
    extra = 0
    readonly_fields = ["currency", "effective_from", "input_per_mtok", "cached_input_per_mtok",
                       "cache_write_per_mtok", "output_per_mtok", "per_image", "per_video_second"]
    display_formats = {name: shown_as_unit_price() for name in readonly_fields[2:]}
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Model)
class ModelAdmin(CatalogAdmin):
    list_display = ["code", "name", "provider", "modality", "context_window", "enabled"]
    list_filter = ["provider", "modality", "enabled"]
    search_fields = ["code", "name", "provider", "uuid"]
    readonly_fields = ["uuid", "created_at"]
    inlines = [PriceInline]


@admin.register(Price)
class PriceAdmin(CatalogAdmin):
    """Prices are history: a new row may be added, an existing one is never edited."""

    list_display = ["model", "currency", "effective_from", "input_per_mtok", "cached_input_per_mtok",
                    "cache_write_per_mtok", "output_per_mtok", "per_image", "per_video_second"]
    display_formats = {name: shown_as_unit_price() for name in list_display[3:]}
    list_filter = ["currency", "model__provider", "model"]
    search_fields = ["model__code", "model__name"]
    date_hierarchy = "effective_from"
    list_select_related = ["model"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Plan)
class PlanAdmin(CatalogAdmin):
    list_display = ["code", "name", "currency", "monthly_fee", "included_tokens", "rpm_limit", "tpm_limit",
                    "max_keys", "max_teams"]
    display_formats = {"monthly_fee": shown_as_money()}
    list_filter = ["currency"]
    search_fields = ["code", "name"]
    readonly_fields = ["uuid", "created_at"]


@admin.register(Subscription)
class SubscriptionAdmin(OrganizationScopedAdmin):
    read_only_for_org_admins = True  # plan changes go through billing, not a form
    list_display = ["organization", "plan", "status", "started_at", "expires_at"]
    list_filter = ["organization", "status", "plan"]
    search_fields = ["organization__name", "plan__code"]
    list_select_related = ["organization", "plan"]


class GrantCreditForm(forms.Form):
    amount = forms.DecimalField(label=_("Amount"), max_digits=20, decimal_places=2,
                                validators=[MinValueValidator(Decimal("0.01"))])
    kind = forms.ChoiceField(label=_("Kind"), choices=CreditGrant.Kind.choices, initial=CreditGrant.Kind.GRANT)
    expires_at = forms.DateTimeField(label=_("Expires at"), required=False)
    note = forms.CharField(label=_("Note"), max_length=300, required=False)

    def clean_expires_at(self) -> Any:
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError(_("The expiry must be in the future."))
        return value


@admin.register(BillingAccount)
class BillingAccountAdmin(OperatorsOnly, NoBulkDelete, OrganizationScopedAdmin):
    list_display = ["organization", "currency", "balance", "credit_limit", "monthly_budget", "status"]
    display_formats = {name: shown_as_money() for name in ("balance", "credit_limit", "monthly_budget")}
    list_filter = ["organization", "currency", "status"]
    search_fields = ["organization__name", "billing_email", "tax_id"]
    # The balance moves only with the ledger (the reconciliation proves it equal to its sum), and
    # the invoicing watermark only with the invoice job: nobody types them.
    readonly_fields = ["uuid", "balance", "invoiced_through", "invoicing_status", "invoicing_started_at",
                       "created_at"]
    actions = ["grant_credits"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            # Set by the platform, not the customer.
            fields += ["currency", "credit_limit", "tax_rate", "draft_grace_days", "status"]
        return fields

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    @admin.action(description=_("Grant credit to the selected accounts"), permissions=["operator"])
    def grant_credits(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        accounts = list(queryset.select_related("organization"))
        form = GrantCreditForm(request.POST if "grant" in request.POST else None)
        if form.is_valid():
            actor = admin_actor(request)
            for account in accounts:
                grant_credit(actor=actor, organization=account.organization, **form.cleaned_data)
            self.message_user(request, ngettext(
                "Credit granted to %(count)d account.", "Credit granted to %(count)d accounts.", len(accounts))
                % {"count": len(accounts)}, messages.SUCCESS)
            return None
        context = {**self.admin_site.each_context(request), "title": _("Grant credit"), "form": form,
                   "accounts": accounts, "opts": self.model._meta,
                   "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
        return TemplateResponse(request, "admin/billing/billingaccount/grant_credits.html", context)


@admin.register(CreditGrant)
class CreditGrantAdmin(NoBulkDelete, OrganizationScopedAdmin):
    """Operators grant credit here (platform superusers); customers read their grants. A grant is
    made through the same service as the API, so it writes its ledger entry and an audit row."""

    read_only_for_org_admins = True
    list_display = ["organization", "kind", "amount", "remaining", "currency", "priority", "expires_at", "status",
                    "created_at"]
    display_formats = {"amount": shown_as_money(), "remaining": shown_as_money()}
    list_filter = ["organization", "kind", "status", "currency"]
    search_fields = ["organization__name", "note"]
    date_hierarchy = "created_at"
    fields = ["organization", "kind", "amount", "priority", "expires_at", "note"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["organization", "kind", "amount", "remaining", "currency", "priority", "expires_at", "status",
                "note", "created_at"] if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.get_readonly_fields(request, obj) if obj is not None else self.fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: CreditGrant, form: Any, change: bool) -> None:
        granted = grant_credit(actor=admin_actor(request), organization=obj.organization,
                               amount=obj.amount, kind=obj.kind, note=obj.note, priority=obj.priority,
                               expires_at=obj.expires_at)
        obj.pk, obj._state.adding = granted.pk, False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(FactsAdmin):
    """The ledger, read-only for everyone: corrections are new entries (credit notes, adjustments)."""

    list_display = ["created_at", "organization", "kind", "amount", "currency", "note"]
    display_formats = {"amount": shown_as_money()}
    list_filter = ["organization", "kind", "currency"]
    search_fields = ["organization__name", "note", "uuid"]
    date_hierarchy = "created_at"


class BudgetAlertInline(ShownFormatted, admin.TabularInline):
    model = BudgetAlert
    extra = 0
    can_delete = False
    fields = readonly_fields = ["period_start", "threshold", "spent", "created_at"]
    display_formats = {"spent": shown_as_money("budget.currency")}

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the budget around it was found in the admin's own organization

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WebhookDeliveryInline(ShownFormatted, admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    fields = readonly_fields = ["event", "status_code", "attempts", "last_error", "delivered_at", "next_attempt_at"]
    ordering = ["-created_at"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the webhook around it was found in the admin's own organization

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Budget)
class BudgetAdmin(OrganizationScopedAdmin):
    """Org admins keep their budgets here; writes go through the budget services (audited,
    hard limits enforced and verify caches dropped as in the API)."""

    list_display = ["organization", "scope", "department", "key", "amount", "currency", "hard_limit",
                    "exhausted_period"]
    display_formats = {"amount": shown_as_money()}
    list_filter = ["organization", "scope", "hard_limit"]
    fields = ["organization", "scope", "department", "key", "amount", "thresholds", "hard_limit"]
    readonly_fields = ["currency", "exhausted_period"]
    inlines = [BudgetAlertInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = ["organization", "scope", "department", "key"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        actor = admin_actor(request)
        if not request.user.is_superuser and not change:
            obj.organization = admin_organization(request)  # the field is not in an org admin's form
        if change:
            budgets.update_budget(actor=actor, budget=obj, amount=obj.amount, thresholds=obj.thresholds,
                                  hard_limit=obj.hard_limit)
            return
        created = budgets.create_budget(actor=actor, organization=obj.organization, scope=obj.scope,
                                        amount=obj.amount, department=obj.department, key=obj.key,
                                        thresholds=obj.thresholds, hard_limit=obj.hard_limit)
        obj.pk, obj._state.adding = created.pk, False

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        budgets.delete_budget(actor=admin_actor(request), budget=obj)


@admin.register(Webhook)
class WebhookAdmin(OrganizationScopedAdmin):
    """Endpoints are created through the API, which shows the signing secret once; here they are
    read, and deleted softly (their delivery log stays). The secret is never shown, not even
    encrypted."""

    list_display = ["url", "organization", "events", "created_at", "deleted_at"]
    list_filter = ["organization", "deleted_at"]
    search_fields = ["url", "uuid", "organization__name"]
    fields = readonly_fields = ["uuid", "url", "events", "created_at", "deleted_at"]
    exclude = ["secret_encrypted"]
    inlines = [WebhookDeliveryInline]
    actions = ["delete_softly"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a hard delete would take the delivery log with it

    @admin.action(description=_("Delete the selected webhooks (their delivery log stays)"))
    def delete_softly(self, request: HttpRequest, queryset: Any) -> None:
        actor = admin_actor(request)
        for webhook in queryset.filter(deleted_at__isnull=True):
            delete_webhook(actor=actor, webhook=webhook)


@admin.register(WebhookEvent)
class WebhookEventAdmin(FactsAdmin):
    list_display = ["type", "uuid", "organization", "created_at"]
    list_filter = ["organization", "type"]
    search_fields = ["uuid"]
    date_hierarchy = "created_at"
    readonly_fields = ["uuid", "type", "data", "created_at"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(FactsAdmin):
    organization_path = "webhook__organization"
    list_display = ["event", "webhook", "status_code", "attempts", "last_error", "delivered_at", "next_attempt_at"]
    list_filter = ["status_code"]  # not by organization: the filter would list every organization's name
    search_fields = ["uuid", "event__uuid", "webhook__url"]
    date_hierarchy = "created_at"
    list_select_related = ["event", "webhook"]
    readonly_fields = ["uuid", "webhook", "event", "status_code", "attempts", "last_error", "delivered_at",
                       "next_attempt_at", "created_at"]


# --- invoices and credit notes (API.md §10) ----------------------------------------------------
# Issued invoices read-only to everyone, drafts editable by platform superusers only, lines and
# credit notes inline, the PDF a click away.


def _may_edit_draft(request: HttpRequest, invoice: Invoice | None) -> bool:
    return request.user.is_active and request.user.is_superuser and invoice is not None and not invoice.is_issued


class PartOfInvoiceInline(ShownFormatted, admin.TabularInline):
    """Seen by whoever sees the invoice (the invoice admin has already found it within their
    organization); org admins hold no Django model permissions, so the default would hide it."""

    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and (request.user.is_superuser or admin_organization(request) is not None)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class LinesOfInvoiceInline(PartOfInvoiceInline):
    """The lines, as the job wrote them. A draft's descriptions may be corrected; amounts never are
    by hand (the totals are their sum), and nothing of an issued invoice changes."""

    model = InvoiceLine
    fields = ["kind", "description", "model", "department", "quantity", "unit", "unit_price", "exact_amount",
              "amount"]
    # exact_amount is the line's unrounded sum of event costs: it keeps their 8 places.
    display_formats = {"unit_price": shown_as_unit_price(), "exact_amount": shown_as_money(per_event=True),
                       "amount": shown_as_money()}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [name for name in self.fields if name != "description" or not _may_edit_draft(request, obj)]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit_draft(request, obj)


class CreditNotesOfInvoiceInline(PartOfInvoiceInline):
    """Issued through POST .../credit-notes, which keeps them within the invoice's amount."""

    model = CreditNote
    fields = readonly_fields = ["credit_note_no", "amount", "currency", "reason", "created_at"]
    display_formats = {"amount": shown_as_money()}

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceDocumentAdmin(OperatorsOnly, NoBulkDelete, OrganizationScopedAdmin):
    """Invoices are made by the nightly job and never added or deleted here: a deleted draft would
    leave a gap in the INV- numbers. Corrections of an issued invoice are credit notes."""

    read_only_for_org_admins = True
    list_display = ["invoice_no", "organization", "period_start", "period_end", "currency", "amount", "status",
                    "issued_at", "pdf_link"]
    list_filter = ["organization", "status", "currency"]
    search_fields = ["invoice_no", "uuid", "organization__name"]
    date_hierarchy = "period_start"
    list_select_related = ["organization"]
    inlines = [LinesOfInvoiceInline, CreditNotesOfInvoiceInline]
    editable_in_drafts = ["seller", "buyer"]
    display_formats = {name: shown_as_money() for name in ("subtotal", "tax", "credits_applied", "amount")}
    actions = ["issue_drafts", "void_drafts"]

    @admin.action(description=_("Issue the selected draft invoices now"), permissions=["operator"])
    def issue_drafts(self, request: HttpRequest, queryset: Any) -> None:
        self._each_draft(request, queryset, issue_draft_invoice,
                         lambda count: ngettext("%(count)d invoice issued.", "%(count)d invoices issued.", count))

    @admin.action(description=_("Void the selected draft invoices"), permissions=["operator"])
    def void_drafts(self, request: HttpRequest, queryset: Any) -> None:
        self._each_draft(request, queryset, void_draft_invoice,
                         lambda count: ngettext("%(count)d draft voided.", "%(count)d drafts voided.", count))

    def _each_draft(self, request: HttpRequest, queryset: Any, service: Callable[..., Invoice],
                    done: Callable[[int], str]) -> None:
        actor, count = admin_actor(request), 0
        for invoice in queryset.filter(status=Invoice.Status.DRAFT).select_related("organization"):
            try:
                service(actor=actor, invoice=invoice)
            except InvoicingError as error:  # another operator or the nightly run got there first
                self.message_user(request, str(error), messages.WARNING)
            else:
                count += 1
        skipped = queryset.exclude(status=Invoice.Status.DRAFT).count()
        self.message_user(request, done(count) % {"count": count}, messages.SUCCESS if count else messages.WARNING)
        if skipped:
            self.message_user(request, ngettext(
                "%(count)d selected invoice was not a draft and was left as it is.",
                "%(count)d selected invoices were not drafts and were left as they are.", skipped)
                % {"count": skipped}, messages.WARNING)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        names = [field.name for field in Invoice._meta.concrete_fields if field.name != "id"] + ["pdf_link"]
        if _may_edit_draft(request, obj):
            return [name for name in names if name not in self.editable_in_drafts]
        return names

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is None:
            return request.user.is_active and request.user.is_superuser
        return _may_edit_draft(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("PDF"))
    def pdf_link(self, invoice: Invoice) -> str:
        url = reverse("admin:billing_invoice_pdf", args=[invoice.pk])
        return format_html('<a href="{}" target="_blank">{}.pdf</a>', url, invoice.invoice_no)

    def get_urls(self) -> list[Any]:
        pdf = path("<path:object_id>/pdf/", self.admin_site.admin_view(self.pdf_view), name="billing_invoice_pdf")
        return [pdf, *super().get_urls()]

    def pdf_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        invoice = self.get_object(request, object_id)  # within the admin's organization
        if invoice is None or not self.has_view_permission(request, invoice):
            raise Http404("no such invoice")
        response = HttpResponse(render_invoice_pdf(invoice), content_type="application/pdf")
        response["Content-Disposition"] = f'inline; filename="{invoice_pdf_filename(invoice)}"'
        return response


@admin.register(CreditNote)
class CreditNoteAdmin(FactsAdmin):
    """Credit notes are documents: read here, issued through the API (which keeps them within
    their invoice's amount and books them in the ledger)."""

    organization_path = "invoice__organization"
    list_display = ["credit_note_no", "invoice", "amount", "currency", "reason", "created_at"]
    display_formats = {"amount": shown_as_money()}
    # No organization filter: it would list every organization's name to an org admin.
    list_filter = ["currency"]
    search_fields = ["credit_note_no", "invoice__invoice_no", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["invoice"]
    readonly_fields = ["uuid", "invoice", "credit_note_no", "amount", "currency", "reason", "created_at"]
