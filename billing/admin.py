from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from billing.models import BillingAccount, CreditGrant, Invoice, InvoiceLine, Model, Plan, Price, Subscription
from portal.admin_scoping import OrganizationScopedAdmin


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


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    readonly_fields = ["description", "model", "department", "quantity", "unit", "amount"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Invoice)
class InvoiceAdmin(OrganizationScopedAdmin):
    read_only_for_org_admins = True  # invoices are issued by the nightly job
    list_display = ["invoice_no", "organization", "period_start", "period_end", "currency", "amount", "status"]
    list_filter = ["organization", "status", "currency"]
    search_fields = ["invoice_no", "uuid", "organization__name"]
    date_hierarchy = "period_start"
    readonly_fields = ["uuid", "created_at"]
    inlines = [InvoiceLineInline]


@admin.register(CreditGrant)
class CreditGrantAdmin(OrganizationScopedAdmin):
    """Ledger credits: added by the platform; customers read them."""

    read_only_for_org_admins = True
    list_display = ["organization", "kind", "amount", "currency", "note", "created_at"]
    list_filter = ["organization", "kind", "currency"]
    search_fields = ["organization__name", "note"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- invoices and credit notes (API.md §10) ----------------------------------------------------
# Replaces the InvoiceAdmin above: issued invoices read-only to everyone, drafts editable by
# platform superusers only, lines and credit notes inline, the PDF a click away. (Imported here so
# that this block merges as one addition.)
from django.http import Http404, HttpResponse  # noqa: E402
from django.urls import path, reverse  # noqa: E402
from django.utils.html import format_html  # noqa: E402

from billing.models import CreditNote  # noqa: E402
from billing.pdf import invoice_pdf_filename, render_invoice_pdf  # noqa: E402
from portal.admin_scoping import FactsAdmin, admin_organization  # noqa: E402

admin.site.unregister(Invoice)


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
