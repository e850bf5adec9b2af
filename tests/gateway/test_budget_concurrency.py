"""32 callers at once against one hard budget (API.md §12): each call's maximum cost is reserved
before it is forwarded, so the budget is never overshot by more than the estimation error of the
calls in flight (here none: the estimate is above what the stand-in reports), however many
callers race for its last cents."""

import asyncio
from decimal import Decimal

import openai

from tests.gateway.conftest import wait_for_events

CALLERS = 32
CALLS_EACH = 4
MESSAGES = [{"role": "user", "content": "hello"}]


async def _caller(client: openai.AsyncOpenAI, outcomes: list[str]) -> None:
    for _ in range(CALLS_EACH):
        try:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=12)
            outcomes.append("ok")
        except openai.APIStatusError as error:
            outcomes.append(error.code)
            if error.code == "budget_exceeded":
                return


async def _race(gw) -> list[str]:
    outcomes: list[str] = []
    async with gw.async_client(timeout=30) as client:
        await asyncio.gather(*(_caller(client, outcomes) for _ in range(CALLERS)))
    return outcomes


def test_thirty_two_callers_never_overshoot_a_hard_budget(gw):
    from billing.budgets import create_budget
    from portal.services import SYSTEM
    from usage.models import UsageEvent

    # One call reserves (10 estimated prompt tokens × 2 + 12 × 8) / 1e6 = 0.000116 and costs
    # (5 × 2 + 12 × 8) / 1e6 = 0.000106: the amount holds 18 calls, not 128.
    amount = Decimal("0.002")
    create_budget(actor=SYSTEM, organization=gw.world.acme, scope="organization", amount=amount, hard_limit=True)
    outcomes = asyncio.run(_race(gw))
    succeeded = outcomes.count("ok")
    assert set(outcomes) == {"ok", "budget_exceeded"}, outcomes
    events = wait_for_events(len(outcomes), timeout=10, key=gw.key)
    assert len(events) == len(outcomes)
    spent = sum((event.cost for event in events), Decimal(0))
    overshoot = max(spent - amount, Decimal(0))
    print(f"\n{CALLERS} callers: {succeeded} calls served, {outcomes.count('budget_exceeded')} refused; "
          f"spent {spent} of {amount}; overshoot {overshoot}")
    assert overshoot == 0
    # And the budget was used, not refused early: within one reservation of each call in flight.
    assert spent >= amount - Decimal("0.000116") - CALLERS * Decimal("0.00001")
    assert succeeded == UsageEvent.objects.filter(key=gw.key, status_code=200).count()


def test_a_calls_reservation_is_settled_to_its_cost_in_the_shared_store(gw):
    import redis
    from django.conf import settings

    from billing.budgets import create_budget
    from billing.money import to_units
    from portal.gateway.catalog import load_key_facts
    from portal.services import SYSTEM

    create_budget(actor=SYSTEM, organization=gw.world.acme, scope="key", key=gw.key, amount=Decimal("1"),
                  hard_limit=True)
    (budget,) = load_key_facts(str(gw.key.uuid)).hard_budgets
    if settings.GATEWAY_REDIS_URL:
        store = redis.Redis.from_url(settings.GATEWAY_REDIS_URL)
        store.delete(budget.counter)

        def counted() -> int:
            return int(store.get(budget.counter))
    else:
        # Without Redis the counters are the gateway's own memory (its thread's runtime, the only one).
        from portal.gateway.app import _runtimes

        def counted() -> int:
            (runtime,) = _runtimes.values()
            return runtime.reservations._memory[budget.counter]
    with gw.client() as client:
        client.chat.completions.create(model="gpt-test", messages=MESSAGES, max_tokens=12)
    (event,) = wait_for_events(1, key=gw.key)
    # Reserved 0.000116 before the call, settled to the 0.000106 it cost when it was handed over.
    assert counted() == to_units(event.cost) == 10_600
