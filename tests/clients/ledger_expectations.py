"""What a Venice ledger answer must say, whichever client read it (venice-py's usage-history,
pyvenice's usage): recomputed from the events and grants the world sent."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from tests.clients.world import ClientWorld, Tenant


def close(actual: float, expected: Decimal) -> bool:
    # The client's models hold floats; our amounts have 8 places.
    return math.isclose(actual, float(expected), rel_tol=1e-12, abs_tol=5e-9)


def assert_ledger(world: ClientWorld, tenant: Tenant, entries: list[dict]) -> None:
    """Every grant and every charge of the tenant once, ascending, with Venice's fields."""
    events = {event["request_id"]: event for event in tenant.events}
    charges = [entry for entry in entries if entry["inferenceDetails"]]
    credits = [entry for entry in entries if not entry["inferenceDetails"]]
    assert sorted(entry["inferenceDetails"]["requestId"] for entry in charges) == sorted(events), (
        "the charges are not exactly the events this organization sent")
    assert sorted(entry["amount"] for entry in credits) == sorted(float(amount) for amount in tenant.grants)
    moments = [datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")) for entry in entries]
    assert moments == sorted(moments), "usage-history walks in ascending timestamp order"
    for entry in charges:
        event = events[entry["inferenceDetails"]["requestId"]]
        cost = world.cost(tenant, event)
        assert close(entry["amount"], -cost), f"{event['request_id']}: amount {entry['amount']}, cost {cost}"
        assert entry["currency"] == tenant.currency
        assert entry["inferenceDetails"]["promptTokens"] == event["prompt_tokens"]
        assert entry["inferenceDetails"]["completionTokens"] == event["completion_tokens"]
        assert entry["inferenceDetails"]["inferenceExecutionTime"] == event["latency_ms"]
        assert entry["pricePerUnitUsd"] >= 0 and entry["units"] >= 0
    for entry in credits:
        assert entry["pricePerUnitUsd"] == 0, "a credit has no unit price: 0 (API.md §6)"
        assert entry["currency"] == tenant.currency
