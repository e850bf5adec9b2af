"""Money: currencies and the project's only rounding rules.

Amounts are `Decimal` end to end and always travel with a currency. Per-event costs are kept
to 8 decimal places; invoice lines and display fields (`*_rmb`, dashboards) are rounded
half-up to 2. Nothing else in the code base quantizes money.
"""

from decimal import ROUND_HALF_UP, Decimal

from babel import Locale, numbers
from django.db import models


class Currency(models.TextChoices):
    CNY = "CNY", "Chinese yuan"
    USD = "USD", "US dollar"
    # Prepaid credit units some vendors bill in.
    VCU = "VCU", "Venice compute units"
    DIEM = "DIEM", "DIEM"
    BUNDLED_CREDITS = "BUNDLED_CREDITS", "Bundled credits"


# Field shape shared by every stored amount: 20 digits, 8 after the point.
AMOUNT_MAX_DIGITS = 20
AMOUNT_DECIMAL_PLACES = 8

EVENT_QUANTUM = Decimal("0.00000001")
DISPLAY_QUANTUM = Decimal("0.01")
TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)
ZERO = Decimal("0")


def round_event_amount(amount: Decimal) -> Decimal:
    """An event's cost as stored: 8 places, half-up."""
    return amount.quantize(EVENT_QUANTUM, rounding=ROUND_HALF_UP)


def round_display_amount(amount: Decimal) -> Decimal:
    """Invoice lines and display fields: 2 places, half-up."""
    return amount.quantize(DISPLAY_QUANTUM, rounding=ROUND_HALF_UP)


def format_money(amount: Decimal, currency: str, locale: str, *, per_event: bool = False) -> str:
    """Money as people read it: the locale's digits, separators and currency sign, with 2 places
    (all 8 for a single event's cost, where the cents would hide it). `locale` is a CLDR name
    ("en", "zh_Hans", "ar")."""
    places = EVENT_QUANTUM if per_event else DISPLAY_QUANTUM
    rounded = amount.quantize(places, rounding=ROUND_HALF_UP)
    pattern = None
    if per_event:
        # The locale's own pattern, with as many fraction digits as a per-event cost keeps.
        standard = Locale.parse(locale).currency_formats["standard"]
        pattern = standard.pattern.replace("0.00", "0." + "0" * AMOUNT_DECIMAL_PLACES)
    return numbers.format_currency(rounded, currency, format=pattern, locale=locale, currency_digits=False)


def decimal_string(amount: Decimal) -> str:
    """A display amount as the APIs write money: a decimal string with 2 places ("12.34")."""
    return str(round_display_amount(amount))


def amount_field(**kwargs) -> models.DecimalField:
    kwargs.setdefault("default", ZERO)
    return models.DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, **kwargs)


def currency_field(**kwargs) -> models.CharField:
    return models.CharField(max_length=16, choices=Currency.choices, **kwargs)


# Rollups and query results add costs as integers of 1e-8 currency units: exact on every
# database (SQLite would add decimals as binary floats) and cheap to sum.
UNITS_PER_CURRENCY_UNIT = 10**AMOUNT_DECIMAL_PLACES


def to_units(amount: Decimal) -> int:
    return int(round_event_amount(amount) * UNITS_PER_CURRENCY_UNIT)


def from_units(units: int | None) -> Decimal:
    return (Decimal(units or 0) / UNITS_PER_CURRENCY_UNIT).quantize(EVENT_QUANTUM)
