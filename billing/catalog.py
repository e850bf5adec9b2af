"""Catalog reads: models and the price in force at an instant.

A floor below usage (ingestion rates every event against these), beside billing.models,
billing.money and billing.rating; nothing here reads usage or billing state."""

import bisect
from collections.abc import Iterable
from datetime import datetime

from billing.models import Model, Price


def price_at(model: Model, currency: str, when: datetime) -> Price | None:
    """The price of `model` in `currency` in force at `when`, or None if none was yet."""
    return (
        Price.objects.filter(model=model, currency=currency, effective_from__lte=when)
        .order_by("-effective_from")
        .first()
    )


def model_by_code(code: str) -> Model | None:
    return Model.objects.filter(code=code).first()


class PriceBook:
    """Every price row of some models in one currency, held in memory for rating a batch.

    One query per batch instead of one per event; lookups by bisection on effective_from.
    """

    def __init__(self, model_ids: Iterable[int], currency: str) -> None:
        self.currency = currency
        self._history: dict[int, tuple[list[datetime], list[Price]]] = {}
        rows = Price.objects.filter(model_id__in=set(model_ids), currency=currency).order_by(
            "model_id", "effective_from"
        )
        for price in rows:
            starts, prices = self._history.setdefault(price.model_id, ([], []))
            starts.append(price.effective_from)
            prices.append(price)

    def at(self, model_id: int, when: datetime) -> Price | None:
        starts, prices = self._history.get(model_id, ((), ()))
        index = bisect.bisect_right(starts, when) - 1
        return prices[index] if index >= 0 else None
