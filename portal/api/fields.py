"""Serializer fields whose rule and whose schema are one: what a request may say is what the
OpenAPI schema says it may say (a generated client, and tests/fuzz, hold them to it).

- Times callers name, in every dialect: range-checked by usage.timebuckets (one rule for the
  whole API) before any view computes with them. An out-of-range value is an ordinary validation
  error of the field, so each dialect answers it in its own shape, naming the parameter
  (B.Param.Invalid, Venice's details, r9s's meta, a 422 loc).
- Money in: a positive decimal string matching the schema's pattern.
- Strings and booleans in JSON bodies: only JSON strings and booleans, as their schema types say.
- Page numbers: bounded, so that no offset overflows."""

import re
from decimal import Decimal

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from usage.timebuckets import EARLIEST_EPOCH, LATEST_EPOCH, SUPPORTED_RANGE, OutOfRange, checked_day, checked_instant

__all__ = ["DayField", "EpochSecondsField", "InstantField", "PageField", "PositiveDecimalString",
           "StrictBooleanField", "StrictCharField"]

# The years 1970-2199 as the schema writes them: the check below is the authority, the pattern
# lets a generated client know the bound before it asks.
YEARS = r"^(19[7-9][0-9]|2[01][0-9][0-9])-"


class EpochSecondsField(serializers.IntegerField):
    """Unix seconds within the supported range (documented as minimum and maximum)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", EARLIEST_EPOCH)
        kwargs.setdefault("max_value", LATEST_EPOCH - 1)
        super().__init__(**kwargs)


@extend_schema_field({"type": "string", "format": "date-time", "pattern": YEARS,
                      "description": f"ISO 8601 with an offset, {SUPPORTED_RANGE}."})
class InstantField(serializers.DateTimeField):
    """An ISO 8601 instant within the supported range."""

    def to_internal_value(self, value):
        moment = super().to_internal_value(value)
        try:
            return checked_instant(moment)
        except OutOfRange as error:
            raise serializers.ValidationError(str(error), code="out_of_range") from error


@extend_schema_field({"type": "string", "format": "date", "pattern": YEARS,
                      "description": f"A calendar day, {SUPPORTED_RANGE}."})
class DayField(serializers.DateField):
    """A calendar day within the supported range."""

    def to_internal_value(self, value):
        day = super().to_internal_value(value)
        try:
            return checked_day(day)
        except OutOfRange as error:
            raise serializers.ValidationError(str(error), code="out_of_range") from error


def positive_decimal_pattern(places: int, integer_digits: int) -> str:
    """A decimal string > 0 with at most `integer_digits` before the point and `places` after it,
    written without sign, exponent, spaces or leading zeros: exactly what PositiveDecimalString accepts."""
    whole = rf"[1-9][0-9]{{0,{integer_digits - 1}}}(\.[0-9]{{1,{places}}})?"
    # Below 1: some zeros, then a non-zero digit, all within `places`.
    fractions = "|".join(rf"0{{{zeros}}}[1-9][0-9]{{0,{places - zeros - 1}}}" for zeros in range(places))
    return rf"^({whole}|0\.({fractions}))$"


class PositiveDecimalString(serializers.DecimalField):
    """Money in, as API.md writes it: a decimal string > 0 ("12.34"), never a JSON number, an
    exponent, a sign or a leading zero; the schema's pattern is the same rule the field applies.
    The messages are DRF's own (translated for the portal's forms, which this field judges too)."""

    def __init__(self, *, places: int, integer_digits: int = 12, **kwargs):
        self.pattern = positive_decimal_pattern(places, integer_digits)
        super().__init__(max_digits=places + integer_digits, decimal_places=places, coerce_to_string=True,
                         min_value=Decimal(1).scaleb(-places), **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)  # "ten" and too many places are refused here
        if value > 0 and not (isinstance(data, str) and re.fullmatch(self.pattern, data)):
            self.fail("invalid")
        return value  # a value <= 0 is refused by min_value, with its own message


class PositiveDecimalStringSchema(OpenApiSerializerFieldExtension):
    target_class = PositiveDecimalString
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        return {"type": "string", "format": "decimal", "pattern": self.target.pattern}


class StrictCharField(serializers.CharField):
    """A JSON string and only a string: DRF's own field takes 7 and stores "7", which the schema's
    `type: string` refuses."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false and only that: DRF's own field also takes "yes", 1 and "off"."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


# Far past any real list (a million pages of the largest page size is a billion rows) and far
# inside what a database OFFSET and Python's arithmetic on it hold: 2**61 pages was a 500.
MAX_PAGE = 1_000_000


class PageField(serializers.IntegerField):
    """A 1-based page number, at most MAX_PAGE (documented as the schema's maximum)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_PAGE)
        super().__init__(**kwargs)
