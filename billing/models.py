"""The catalog (models and their price history), plans and subscriptions, billing accounts
and invoices.

Prices are never edited in place: a correction is a new row with a later `effective_from`,
so the price any past event was rated at can always be found again.
"""

import uuid

from django.core.validators import MinValueValidator
from django.db import models

from billing.money import ZERO, Currency, amount_field, currency_field
from portal.models import Department, Organization


class Model(models.Model):
    """A model the gateway serves. `code` (e.g. `qwen-plus`) is the id every API uses."""

    class Modality(models.TextChoices):
        LLM = "llm", "Text LLM"
        VL = "vl", "Vision-language"
        IMAGE = "image", "Image generation"
        VIDEO = "video", "Video generation"
        TTS = "tts", "Text to speech"
        ASR = "asr", "Speech recognition"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    code = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    provider = models.CharField(max_length=100)
    modality = models.CharField(max_length=16, choices=Modality.choices, default=Modality.LLM)
    context_window = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "code"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.code


def _price_field() -> models.DecimalField:
    return amount_field(validators=[MinValueValidator(ZERO)])


class Price(models.Model):
    """One model's prices in one currency from `effective_from` until the next row's."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="prices")
    currency = currency_field()
    effective_from = models.DateTimeField()
    input_per_mtok = _price_field()
    cached_input_per_mtok = _price_field()
    output_per_mtok = _price_field()
    per_image = _price_field()
    per_video_second = _price_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "currency", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "currency", "effective_from"], name="price_unique_per_model_currency_time"
            ),
            models.CheckConstraint(
                condition=models.Q(input_per_mtok__gte=0)
                & models.Q(cached_input_per_mtok__gte=0)
                & models.Q(output_per_mtok__gte=0)
                & models.Q(per_image__gte=0)
                & models.Q(per_video_second__gte=0),
                name="price_amounts_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.code} {self.currency} from {self.effective_from:%Y-%m-%d %H:%M}"


class Plan(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    code = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    currency = currency_field(default=Currency.CNY)
    monthly_fee = amount_field(validators=[MinValueValidator(ZERO)])
    included_tokens = models.PositiveBigIntegerField(default=0)
    rpm_limit = models.PositiveIntegerField()
    tpm_limit = models.PositiveIntegerField()
    max_keys = models.PositiveIntegerField()
    max_teams = models.PositiveIntegerField()
    # Model codes the plan includes; empty means every enabled model.
    models_allowed = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["monthly_fee", "code"]

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    """An organization on a plan for a period; at most one is active at a time."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        EXPIRED = "expired"
        CANCELLED = "cancelled"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization"],
                condition=models.Q(status="active"),
                name="one_active_subscription_per_org",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization} on {self.plan}"


class BillingAccount(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"
        CLOSED = "closed"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="billing_account")
    # Usage is rated and invoiced in this currency. The balance is not stored: it is always
    # credits granted minus usage (billing.selectors.account_balance).
    currency = currency_field(default=Currency.CNY)
    credit_limit = amount_field(validators=[MinValueValidator(ZERO)])
    monthly_budget = amount_field(null=True, blank=True, default=None, validators=[MinValueValidator(ZERO)])
    billing_email = models.EmailField(blank=True)
    tax_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization"]

    def __str__(self) -> str:
        return f"{self.organization} ({self.currency})"


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        ISSUED = "issued"
        PAID = "paid"
        VOID = "void"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="invoices")
    invoice_no = models.CharField(max_length=64, unique=True)
    period_start = models.DateField()
    period_end = models.DateField()
    currency = currency_field()
    subtotal = amount_field()
    tax = amount_field()
    amount = amount_field()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    issued_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start", "period_end", "currency"],
                name="one_invoice_per_org_period_currency",
            ),
            models.CheckConstraint(condition=models.Q(period_end__gte=models.F("period_start")),
                                   name="invoice_period_ordered"),
        ]

    def __str__(self) -> str:
        return self.invoice_no


class InvoiceLine(models.Model):
    """One line of an invoice, by model and department; its currency is the invoice's."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=24, decimal_places=4, default=ZERO)
    unit = models.CharField(max_length=32, blank=True)
    amount = amount_field()

    class Meta:
        ordering = ["invoice", "id"]

    def __str__(self) -> str:
        return self.description

    @property
    def currency(self) -> str:
        return self.invoice.currency


class CreditGrant(models.Model):
    """A positive ledger entry: a top-up paid by the customer, or credit granted by the platform.
    Append-only; a correction is another entry."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up"
        GRANT = "grant"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="credit_grants")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = amount_field(validators=[MinValueValidator(ZERO)])
    currency = currency_field()
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["organization", "-created_at"]
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="credit_grant_positive")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency}"
