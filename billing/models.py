"""The catalog (models and their price history), plans and subscriptions, billing accounts,
the ledger, credit grants, budgets, webhooks, invoices and credit notes (API.md §10).

Prices are never edited in place: a correction is a new row with a later `effective_from`,
so the price any past event was rated at can always be found again. Ledger entries, issued
invoices and their lines, and credit notes are never changed either: the model layer refuses
it here, and on PostgreSQL a trigger refuses it below the ORM (billing/migrations).
"""

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from billing.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS, ZERO, Currency, amount_field, currency_field
from portal.models import Department, Organization


class AppendOnly(models.Model):
    """A row written once: saving it again or deleting it is refused (corrections are new rows)."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValidationError(f"{type(self).__name__} rows are append-only; write a correcting entry")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError(f"{type(self).__name__} rows are append-only and are never deleted")


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
    # The most a call may generate when it names no max_tokens: what the gateway reserves against a
    # hard budget for the output (API.md §12); empty falls back to settings.GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS.
    max_output_tokens = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["provider", "code"]
        verbose_name = "model"

    def __str__(self) -> str:
        return self.code


def _price_field(**kwargs) -> models.DecimalField:
    return amount_field(validators=[MinValueValidator(ZERO)], **kwargs)


class Price(models.Model):
    """One model's prices in one currency from `effective_from` until the next row's."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="prices")
    currency = currency_field()
    effective_from = models.DateTimeField()
    input_per_mtok = _price_field()
    cached_input_per_mtok = _price_field()
    # Cache writes (Anthropic-style prompt caching), priced above input there. Null: the model
    # charges them as plain input (billing.rating falls back to input_per_mtok).
    cache_write_per_mtok = _price_field(null=True, blank=True, default=None)
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
                & (models.Q(cache_write_per_mtok__isnull=True) | models.Q(cache_write_per_mtok__gte=0))
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

    class Invoicing(models.TextChoices):
        # Zulip's invoicing_status: a run marks the account STARTED before it writes and DONE
        # after, so a run killed in between is finished by the next one, never doubled.
        DONE = "done"
        STARTED = "started"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="billing_account")
    # Usage is rated and invoiced in this currency.
    currency = currency_field(default=Currency.CNY)
    # The sum of the account's ledger entries and usage charges, kept in the same transaction as
    # each of them; the nightly reconciliation proves it equal to the sum (billing.reconciliation).
    balance = amount_field()
    credit_limit = amount_field(validators=[MinValueValidator(ZERO)])
    monthly_budget = amount_field(null=True, blank=True, default=None, validators=[MinValueValidator(ZERO)])
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=ZERO,
                                   validators=[MinValueValidator(ZERO), MaxValueValidator(1)],
                                   help_text="e.g. 0.0600 for 6 % VAT on every invoice")
    # Days an invoice stays a draft before it is issued; 0 issues at once.
    draft_grace_days = models.PositiveSmallIntegerField(default=0)
    legal_name = models.CharField(max_length=200, blank=True, help_text="The customer as invoices name it")
    address = models.TextField(blank=True)
    billing_email = models.EmailField(blank=True)
    tax_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # The last day of the last period invoiced, and whether a run is between its two writes.
    invoiced_through = models.DateField(null=True, blank=True)
    invoicing_status = models.CharField(max_length=16, choices=Invoicing.choices, default=Invoicing.DONE)
    invoicing_started_at = models.DateTimeField(null=True, blank=True)
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
    invoice_no = models.CharField(max_length=64, unique=True)  # INV-YYYY-NNNNNN, gapless per year
    period_start = models.DateField()  # the first day of the period, in the organization's timezone
    period_end = models.DateField()  # the last day, inclusive
    currency = currency_field()
    subtotal = amount_field()
    tax_rate = models.DecimalField(max_digits=6, decimal_places=4, default=ZERO)
    tax = amount_field()
    credits_applied = amount_field()
    amount = amount_field()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    issued_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # Both parties as they stood when the invoice was made (a later rename changes no invoice).
    seller = models.JSONField(default=dict, blank=True)
    buyer = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Once issued, only these may still change (payment and voiding are events after issue).
    MUTABLE_AFTER_ISSUE = frozenset({"status", "paid_at"})

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

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding and self.pk:
            stored = Invoice.objects.filter(pk=self.pk).values().first()
            if stored and stored["status"] != self.Status.DRAFT:
                changed = {name for name, value in stored.items() if getattr(self, name) != value}
                if changed - self.MUTABLE_AFTER_ISSUE:
                    raise ValidationError(f"issued invoice {self.invoice_no} cannot change {sorted(changed)}; "
                                          "issue a credit note")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.status != self.Status.DRAFT:
            raise ValidationError(f"issued invoice {self.invoice_no} cannot be deleted; issue a credit note")
        return super().delete(*args, **kwargs)

    @property
    def is_issued(self) -> bool:
        return self.status != self.Status.DRAFT


class InvoiceLine(models.Model):
    """One line of an invoice; its currency is the invoice's. Usage lines are one per (model,
    department); their amount is the exact sum of their events' costs, rounded once."""

    class Kind(models.TextChoices):
        PLAN_FEE = "plan_fee"
        USAGE = "usage"
        CREDIT = "credit"
        ADJUSTMENT = "adjustment"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.USAGE)
    model = models.ForeignKey(Model, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    department = models.ForeignKey(
        Department, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    description = models.CharField(max_length=300)
    quantity = models.DecimalField(max_digits=24, decimal_places=4, default=ZERO)
    unit = models.CharField(max_length=32, blank=True)
    unit_price = models.DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, null=True,
                                     blank=True)
    # Usage lines: the exact sum of their events' costs before rounding (reconciliation).
    exact_amount = amount_field()
    amount = amount_field()

    class Meta:
        ordering = ["invoice", "id"]

    def __str__(self) -> str:
        return self.description

    def save(self, *args, **kwargs) -> None:
        if self.invoice.status != Invoice.Status.DRAFT:
            raise ValidationError("the lines of an issued invoice never change")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        if self.invoice.status != Invoice.Status.DRAFT:
            raise ValidationError("the lines of an issued invoice never change")
        return super().delete(*args, **kwargs)

    @property
    def currency(self) -> str:
        return self.invoice.currency


class CreditGrant(models.Model):
    """Prepaid credit: a top-up paid by the customer or credit granted by the platform. Its
    creation is a `top_up`/`grant` ledger entry; charges draw its `remaining` down (lowest
    priority number first, then earliest expiry, then oldest); at expiry the remainder leaves
    through a `grant_expiry` entry."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up"
        GRANT = "grant"

    class Status(models.TextChoices):
        ACTIVE = "active"
        USED = "used"
        EXPIRED = "expired"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="credit_grants")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = amount_field(validators=[MinValueValidator(ZERO)])
    remaining = amount_field(validators=[MinValueValidator(ZERO)])
    currency = currency_field()
    priority = models.PositiveIntegerField(default=10, help_text="Lower is drawn first")
    expires_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["organization", "-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="credit_grant_positive"),
            models.CheckConstraint(condition=models.Q(remaining__gte=0) & models.Q(remaining__lte=models.F("amount")),
                                   name="credit_grant_remaining_within_amount"),
        ]
        indexes = [models.Index(fields=["organization", "status", "priority", "expires_at"],
                                name="credit_grant_draw_order")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency}"


class LedgerEntry(AppendOnly):
    """Every money movement but usage: usage charges are the usage events themselves (each
    event's `cost`, negative in the ledger), so ingestion writes no second row per event."""

    class Kind(models.TextChoices):
        TOP_UP = "top_up"
        GRANT = "grant"
        GRANT_EXPIRY = "grant_expiry"
        CREDIT_NOTE = "credit_note"
        INVOICE_PAYMENT = "invoice_payment"
        ADJUSTMENT = "adjustment"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = amount_field()  # signed: what it adds to the balance
    currency = currency_field()
    grant = models.ForeignKey(CreditGrant, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    credit_note = models.ForeignKey("CreditNote", null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="entries")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["organization", "created_at", "id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["organization", "created_at", "id"], name="ledger_entry_walk")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} {self.currency}"


class CreditNote(AppendOnly):
    """A correction of an issued invoice: never more, with its siblings, than the invoice's amount."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    credit_note_no = models.CharField(max_length=64, unique=True)  # CN-YYYY-NNNNNN, gapless per year
    amount = amount_field()
    currency = currency_field()
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["invoice", "id"]
        constraints = [models.CheckConstraint(condition=models.Q(amount__gt=0), name="credit_note_positive")]

    def __str__(self) -> str:
        return self.credit_note_no


class DocumentSequence(models.Model):
    """The last number given per document kind and year. Taken under a row lock inside the
    transaction that writes the document, so numbers are gapless: a rolled-back document
    returns its number with it."""

    kind = models.CharField(max_length=8)  # "INV", "CN"
    year = models.PositiveSmallIntegerField()
    last = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "year"], name="document_sequence_unique")]

    def __str__(self) -> str:
        return f"{self.kind}-{self.year}: {self.last}"


def _default_thresholds() -> list[int]:
    return [50, 80, 100]


class Budget(models.Model):
    """A monthly spending budget (calendar months in the organization's timezone) over the whole
    organization, one department or one key."""

    class Scope(models.TextChoices):
        ORGANIZATION = "organization"
        DEPARTMENT = "department"
        KEY = "key"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    scope = models.CharField(max_length=16, choices=Scope.choices)
    department = models.ForeignKey(Department, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="budgets")
    key = models.ForeignKey("keys.InferenceKey", null=True, blank=True, on_delete=models.CASCADE,
                            related_name="budgets")
    amount = amount_field(validators=[MinValueValidator(ZERO)])
    currency = currency_field()
    thresholds = models.JSONField(default=_default_thresholds)  # ascending percents, 1-100
    hard_limit = models.BooleanField(default=False)
    # The first day of the period in which the hard limit was reached; verify answers
    # budget_exhausted while this is the current period.
    exhausted_period = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["organization", "scope", "id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="budget_positive"),
            models.CheckConstraint(
                condition=(models.Q(scope="organization", department__isnull=True, key__isnull=True)
                           | models.Q(scope="department", department__isnull=False, key__isnull=True)
                           | models.Q(scope="key", department__isnull=True, key__isnull=False)),
                name="budget_target_matches_scope"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} budget {self.amount} {self.currency}"


class BudgetAlert(models.Model):
    """A threshold crossed in a period: the unique constraint makes each alert once-only, however
    many budget jobs run at once."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    period_start = models.DateField()
    threshold = models.PositiveSmallIntegerField()
    spent = amount_field()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["budget", "-period_start", "threshold"]
        constraints = [models.UniqueConstraint(fields=["budget", "period_start", "threshold"],
                                               name="budget_alert_once_per_period")]

    def __str__(self) -> str:
        return f"{self.threshold} % of {self.budget} in {self.period_start:%Y-%m}"


class Webhook(models.Model):
    """An endpoint of the organization's that receives signed events. The signing secret is kept
    encrypted (Fernet, key from the environment): it must be read back to sign."""

    class Event(models.TextChoices):
        BUDGET_THRESHOLD = "budget.threshold"
        BUDGET_EXHAUSTED = "budget.exhausted"
        INVOICE_ISSUED = "invoice.issued"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    secret_encrypted = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["organization", "-created_at"]

    def __str__(self) -> str:
        return self.url


class WebhookEvent(models.Model):
    """One event as sent: its uuid is the `id` every delivery and retry carries."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="webhook_events")
    type = models.CharField(max_length=64, choices=Webhook.Event.choices)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["organization", "-created_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.uuid}"


class WebhookDelivery(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["webhook", "-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [models.UniqueConstraint(fields=["webhook", "event"], name="one_delivery_per_webhook_event")]

    def __str__(self) -> str:
        return f"{self.event.type} to {self.webhook.url}"
