"""Serializer fields for the times callers name, shared by every dialect: each is range-checked
by usage.timebuckets (one rule for the whole API) before any view computes with it, and the
schema documents the same bounds the check enforces.

An out-of-range value is an ordinary validation error of the field, so each dialect answers it
in its own shape, naming the parameter (B.Param.Invalid, Venice's details, r9s's meta, 422 loc)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from usage.timebuckets import EARLIEST_EPOCH, LATEST_EPOCH, SUPPORTED_RANGE, OutOfRange, checked_day, checked_instant

__all__ = ["DayField", "EpochSecondsField", "InstantField"]

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
