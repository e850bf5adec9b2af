"""The world the vendor clients are pointed at, built the way production builds it.

Organizations, departments, members, keys and models come from the services (there is no API
for them); money and usage arrive through the platform's own doors, with the service token:
credit grants through `POST /api/v1/billing/credit-grants` and every usage event through
`POST /api/v1/usage/events` of the live server. The events sent are kept here, and every number
a test expects is recomputed from them (`event_cost` is API.md §1's formula, written again here
on purpose: a test that imported the product's rating would agree with any bug in it).

- Northwind (USD, America/New_York, credit limit 100): two departments (one at a 0.9 discount),
  two keys, two chat models and an image model, 30 events over the last two days with errors,
  cache reads, latencies, tracing attributes and calls turned away before any unit (zero units,
  so no unit price); two credit grants (kind "grant") made before the usage, which draws on them.
- Shenzhou (CNY, Asia/Shanghai): a few events of its own. Its data must never show in Northwind's
  answers, and the clients that allow another currency are asked about it too.
- Cachewrite (USD, UTC): events with cache-creation (cache-write) tokens, API.md §2's extension
  for issue 14. Its own organization, so that a server that refuses those events still lets
  every other client test run; the refusal is kept and reported by the test that needs them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

# Every test module here carries this mark: it declares the database the tests read through the
# live server, so that pytest-django creates the test database and runs them with the
# transactional tests (after the others). `available_apps=[]` turns the flush pytest-django does
# after each of them into a no-op: conftest's `world_and_answers` empties the database itself,
# once per module.
LIVE_DATABASE = pytest.mark.django_db(transaction=True, available_apps=[])

EIGHT_PLACES = Decimal("0.00000001")
MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Prices:
    """Per million tokens (input, cache read, output) and per image, in the account's currency."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    per_image: Decimal = Decimal(0)

    @property
    def cache_write(self) -> Decimal:
        # API.md §1: the cache-write price falls back to the input price; these models set none.
        return self.input


@dataclass(frozen=True)
class CatalogModel:
    code: str
    name: str
    modality: str  # "llm" or "image"
    usd: Prices
    cny: Prices


@dataclass
class Tenant:
    """One organization as its client sees it: its ids, its owner's management key, what was sent."""

    name: str
    uuid: str
    currency: str
    timezone: str
    management_key: str = ""
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # key uuid -> {name, discount}
    grants: list[Decimal] = field(default_factory=list)
    credit_limit: Decimal = Decimal(0)
    events: list[dict[str, Any]] = field(default_factory=list)  # accepted by the ingestion API
    refused: str | None = None  # the ingestion API's answer when it refused a batch


@dataclass
class ClientWorld:
    base_url: str  # the live server, e.g. http://127.0.0.1:41234
    start: datetime  # UTC midnight two days ago: every event is at or after it
    now: datetime
    models: dict[str, CatalogModel]
    northwind: Tenant
    shenzhou: Tenant
    cachewrite: Tenant

    def cost(self, tenant: Tenant, event: dict[str, Any]) -> Decimal:
        return event_cost(event, self.models[event["model"]], tenant.currency, tenant.keys[event["key_id"]]["discount"])


MODELS = [
    CatalogModel("nw-qwen-plus", "Qwen Plus", "llm",
                 usd=Prices(Decimal("0.40"), Decimal("0.10"), Decimal("1.20")),
                 cny=Prices(Decimal("2.80"), Decimal("0.70"), Decimal("8.40"))),
    CatalogModel("nw-deepseek-chat", "DeepSeek Chat", "llm",
                 usd=Prices(Decimal("0.27"), Decimal("0.07"), Decimal("1.10")),
                 cny=Prices(Decimal("2.00"), Decimal("0.50"), Decimal("8.00"))),
    CatalogModel("nw-flux-image", "Flux Image", "image",
                 usd=Prices(Decimal(0), Decimal(0), Decimal(0), Decimal("0.04")),
                 cny=Prices(Decimal(0), Decimal(0), Decimal(0), Decimal("0.29"))),
]


def event_cost(event: dict[str, Any], model: CatalogModel, currency: str, discount: Decimal) -> Decimal:
    """API.md §1, at the department's discount, kept to 8 places (half-up)."""
    prices = model.usd if currency == "USD" else model.cny
    prompt, cached = event.get("prompt_tokens", 0), event.get("cached_tokens", 0)
    writes = event.get("cache_creation_tokens", 0)
    tokens = ((prompt - cached - writes) * prices.input + cached * prices.cached_input
              + writes * prices.cache_write + event.get("completion_tokens", 0) * prices.output) / MILLION
    exact = (tokens + event.get("image_count", 0) * prices.per_image) * discount
    return exact.quantize(EIGHT_PLACES, rounding=ROUND_HALF_UP)


def _events(tenant: Tenant, start: datetime, count: int, *, seed: int, cache_writes: bool = False) -> list[dict]:
    """`count` events spread over the 40 hours after `start`, reproducible from `seed`."""
    rng = random.Random(seed)
    keys = list(tenant.keys)
    batch = []
    for number in range(count):
        model = MODELS[number % len(MODELS)] if not cache_writes else MODELS[number % 2]
        image = model.modality == "image"
        # Every eleventh call was turned away before any token or image (a 429 with zero units).
        turned_away = number % 11 == 4
        prompt = 0 if image or turned_away else rng.randrange(200, 9000)
        cached = 0 if image else rng.choice([0, prompt // 4, prompt // 2])
        event = {
            "request_id": f"{tenant.name}-{number}",
            "timestamp": (start + timedelta(minutes=10 + 80 * number)).isoformat().replace("+00:00", "Z"),
            "key_id": keys[number % len(keys)],
            "model": model.code,
            "prompt_tokens": prompt,
            "completion_tokens": 0 if image or turned_away else rng.randrange(0, 3000),
            "cached_tokens": cached,
            "image_count": rng.choice([1, 2]) if image and not turned_away else 0,
            "input_chars": rng.randrange(0, 20000),
            "output_chars": rng.randrange(0, 9000),
            "latency_ms": rng.randrange(80, 20000),
            "status_code": 429 if turned_away else rng.choice([200] * 7 + [429, 500]),
            "op_name": rng.choice(["chat", "embed"]),
            "trace_id": f"{tenant.name}-trace-{number // 3}",
            "conversation_id": rng.choice([None, f"{tenant.name}-conv-{number % 5}"]),
        }
        if cache_writes:
            event["cache_creation_tokens"] = (prompt - cached) // 3
        batch.append(event)
    return batch


def build(base_url: str) -> ClientWorld:
    """Seed the world and send its money and usage through the live server at `base_url`."""
    from django.test import override_settings

    from billing.models import BillingAccount
    from keys import services as key_services
    from tests import factories

    now = datetime.now(UTC)
    start = datetime.combine((now - timedelta(days=2)).date(), datetime.min.time(), tzinfo=UTC)
    models = {}
    for model in MODELS:
        row = factories.make_model(model.code, modality=model.modality, usd=_price_tuple(model.usd),
                                   cny=_price_tuple(model.cny))
        row.name = model.name
        row.save(update_fields=["name"])
        models[model.code] = model

    tenants = {}
    # PBKDF2's deliberate slowness buys nothing here (the conftest's per-test override is not active yet).
    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        for name, currency, zone, credit_limit, departments in (
            ("northwind", "USD", "America/New_York", Decimal("100"),
             [("Research", Decimal("1")), ("Support", Decimal("0.9"))]),
            ("shenzhou", "CNY", "Asia/Shanghai", Decimal(0), [("Platform", Decimal("1"))]),
            ("cachewrite", "USD", "UTC", Decimal(0), [("Agents", Decimal("1"))]),
        ):
            organization = factories.make_organization(name.title(), timezone=zone, currency=currency)
            # An operator's setting (Django admin); no API sets it.
            BillingAccount.objects.filter(organization=organization).update(credit_limit=credit_limit)
            owner = factories.make_member(organization, f"{name}_owner", role="owner")
            tenant = Tenant(name=name, uuid=str(organization.uuid), currency=currency, timezone=zone,
                            credit_limit=credit_limit)
            tenant.management_key = key_services.create_management_key(
                actor=_system(), member=owner, name="vendor client").secret
            for department_name, discount in departments:
                department = factories.make_department(organization, department_name, discount=discount)
                key, _ = factories.make_inference_key(department, owner=owner, name=f"{department_name} app")
                tenant.keys[str(key.uuid)] = {"name": key.name, "discount": discount}
            tenants[name] = tenant
    service_token = key_services.create_service_token(actor=_system(), name="clients tests").secret

    world = ClientWorld(base_url=base_url, start=start, now=now, models=models, **tenants)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {service_token}"}, timeout=60) as http:
        # Grants before usage: each charge draws on the grants as it is recorded (API.md §10).
        for amount, priority in ((Decimal("30.00"), 5), (Decimal("20.50"), 10)):
            _grant(http, world.northwind, amount, priority)
        _grant(http, world.shenzhou, Decimal("500.00"), 10)
        _ingest(http, world.northwind, _events(world.northwind, start, 30, seed=14))
        _ingest(http, world.shenzhou, _events(world.shenzhou, start, 6, seed=41))
        _ingest(http, world.cachewrite, _events(world.cachewrite, start, 8, seed=7, cache_writes=True), strict=False)
    # What the background folder (a Celery worker in production) does after each commit: no worker
    # runs beside the live server, so the world folds its committed batches itself.
    from usage.folding import fold_until_empty

    fold_until_empty()
    return world


def _system():
    from portal.services import SYSTEM

    return SYSTEM


def _price_tuple(prices: Prices) -> tuple[str, ...]:
    return (str(prices.input), str(prices.cached_input), str(prices.output), str(prices.per_image), "0")


def _grant(http: httpx.Client, tenant: Tenant, amount: Decimal, priority: int) -> None:
    answer = http.post("/api/v1/billing/credit-grants", json={
        "org_id": tenant.uuid, "kind": "grant", "amount": str(amount), "priority": priority,
        "note": f"welcome credit {priority}"})
    assert answer.status_code == 201, f"credit grant refused: {answer.status_code} {answer.text}"
    tenant.grants.append(amount)


def _ingest(http: httpx.Client, tenant: Tenant, events: list[dict], *, strict: bool = True) -> None:
    answer = http.post("/api/v1/usage/events", json={"events": events})
    if answer.status_code == 200 and answer.json() == {"accepted": len(events), "duplicates": 0}:
        tenant.events.extend(events)
        return
    tenant.refused = f"POST /api/v1/usage/events answered {answer.status_code}: {answer.text[:1500]}"
    assert not strict, tenant.refused
