from typing import Any

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from billing import budgets
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
from billing.pdf import invoice_pdf_filename, render_invoice_pdf
from billing.services import grant_credit
from billing.webhooks import delete_webhook
from portal.admin_scoping import FactsAdmin, OrganizationScopedAdmin, admin_organization
from portal.services import Actor


class CatalogAdmin(OrganizationScopedAdmin):
    """The shared catalog: every org admin may read it, only platform superusers change it."""

    organization_path = None
    read_only_for_org_admins = True


class PriceInline(admin.TabularInline):
    model = Price
    extra = 0
    readonly_fields = ["currency", "effective_from", "input_per_mtok", "cached_input_per_mtok",
                       "output_per_mtok", "per_image", "per_video_second"]
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
                    "output_per_mtok", "per_image", "per_video_second"]
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


@admin.register(BillingAccount)
class BillingAccountAdmin(OrganizationScopedAdmin):
    list_display = ["organization", "currency", "credit_limit", "monthly_budget", "status"]
    list_filter = ["organization", "currency", "status"]
    search_fields = ["organization__name", "billing_email", "tax_id"]
    readonly_fields = ["uuid", "created_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields += ["currency", "credit_limit", "status"]  # set by the platform, not the customer
        return fields

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser


@admin.register(CreditGrant)
class CreditGrantAdmin(OrganizationScopedAdmin):
    """Operators grant credit here (platform superusers); customers read their grants. A grant is
    made through the same service as the API, so it writes its ledger entry and an audit row."""

    read_only_for_org_admins = True
    list_display = ["organization", "kind", "amount", "remaining", "currency", "priority", "expires_at", "status",
                    "created_at"]
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
        granted = grant_credit(actor=Actor(label=request.user.get_username()), organization=obj.organization,
                               amount=obj.amount, kind=obj.kind, note=obj.note, priority=obj.priority,
                               expires_at=obj.expires_at)
        obj.pk, obj._state.adding = granted.pk, False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(FactsAdmin):
    """The ledger, read-only for everyone: corrections are new entries (credit notes, adjustments)."""

    list_display = ["created_at", "organization", "kind", "amount", "currency", "note"]
    list_filter = ["organization", "kind", "currency"]
    search_fields = ["organization__name", "note", "uuid"]
    date_hierarchy = "created_at"


class BudgetAlertInline(admin.TabularInline):
    model = BudgetAlert
    extra = 0
    can_delete = False
    fields = readonly_fields = ["period_start", "threshold", "spent", "created_at"]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the budget around it was found in the admin's own organization

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class WebhookDeliveryInline(admin.TabularInline):
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
    list_filter = ["organization", "scope", "hard_limit"]
    fields = ["organization", "scope", "department", "key", "amount", "thresholds", "hard_limit"]
    readonly_fields = ["currency", "exhausted_period"]
    inlines = [BudgetAlertInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = ["organization", "scope", "department", "key"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        actor = Actor(member=getattr(request, "portal_member", None), label=request.user.get_username())
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
        budgets.delete_budget(actor=Actor(label=request.user.get_username()), budget=obj)

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

    @admin.action(description="Delete the selected webhooks (their delivery log stays)")
    def delete_softly(self, request: HttpRequest, queryset: Any) -> None:
        actor = Actor(member=getattr(request, "portal_member", None), label=request.user.get_username(),
                      source_ip=request.META.get("REMOTE_ADDR"))
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


class PartOfInvoiceInline(admin.TabularInline):
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

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [name for name in self.fields if name != "description" or not _may_edit_draft(request, obj)]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit_draft(request, obj)


class CreditNotesOfInvoiceInline(PartOfInvoiceInline):
    """Issued through POST .../credit-notes, which keeps them within the invoice's amount."""

    model = CreditNote
    fields = readonly_fields = ["credit_note_no", "amount", "currency", "reason", "created_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceDocumentAdmin(OrganizationScopedAdmin):
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

    @admin.display(description="PDF")
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
    # No organization filter: it would list every organization's name to an org admin.
    list_filter = ["currency"]
    search_fields = ["credit_note_no", "invoice__invoice_no", "reason"]
    date_hierarchy = "created_at"
    list_select_related = ["invoice"]
    readonly_fields = ["uuid", "invoice", "credit_note_no", "amount", "currency", "reason", "created_at"]
