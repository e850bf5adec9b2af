"""Numbers and money in the reader's language (API.md §11): `{{ amount|money:currency }}`,
`{{ cost|event_money:currency }}` (all 8 places), `{{ tokens|number }}`, `{{ share|percent }}`.

The rounding is billing.money's; only the digits, separators and signs are the locale's (CLDR)."""

from decimal import Decimal

from babel import numbers
from django import template
from django.utils import translation

from billing.money import format_money

register = template.Library()


def current_locale() -> str:
    return translation.to_locale(translation.get_language() or "en")


def _decimal(value) -> Decimal | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


@register.filter
def money(amount, currency: str) -> str:
    value = _decimal(amount)
    return "" if value is None else format_money(value, currency, current_locale())


@register.filter
def event_money(amount, currency: str) -> str:
    value = _decimal(amount)
    return "" if value is None else format_money(value, currency, current_locale(), per_event=True)


@register.filter
def number(value, places: int | None = None) -> str:
    """A count or measure with the locale's grouping; `places` fixes the fraction digits."""
    if value is None or value == "":
        return ""
    if places is None:
        return numbers.format_decimal(value, locale=current_locale())
    pattern = "#,##0" + ("." + "0" * int(places) if int(places) else "")
    return numbers.format_decimal(value, format=pattern, locale=current_locale(), decimal_quantization=True)


@register.filter
def percent(value, places: int = 1) -> str:
    """A fraction (0.25) as the locale writes a percentage (25.0 %)."""
    if value is None or value == "":
        return ""
    pattern = "#,##0" + ("." + "0" * int(places) if int(places) else "") + "%"
    return numbers.format_percent(value, format=pattern, locale=current_locale(), decimal_quantization=True)
