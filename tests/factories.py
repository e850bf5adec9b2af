"""Factories: build rows through the same services the product uses, with sensible defaults."""

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.utils.text import slugify

from billing import services as billing_services
from billing.models import Model, Plan
from keys import services as key_services
from keys.models import InferenceKey
from portal import services
from portal.models import Department, Member, Organization

_sequence = itertools.count(1)
EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def make_organization(name: str | None = None, *, timezone: str = "Asia/Shanghai", currency: str = "CNY",
                      monthly_budget: Decimal | None = None) -> Organization:
    number = next(_sequence)
    name = name or f"Org {number}"
    organization = services.create_organization(
        actor=services.SYSTEM, name=name, slug=f"{slugify(name)}-{number}", timezone=timezone
    )
    billing_services.open_billing_account(
        actor=services.SYSTEM, organization=organization, currency=currency, monthly_budget=monthly_budget
    )
    return organization


def make_department(organization: Organization, name: str | None = None, **fields: Any) -> Department:
    return services.create_department(
        actor=services.SYSTEM, organization=organization, name=name or f"Department {next(_sequence)}", **fields
    )


def make_member(organization: Organization, username: str | None = None, *, role: str = "member",
                password: str = "pass-for-tests") -> Member:
    return services.create_member(
        actor=services.SYSTEM, organization=organization, username=username or f"user{next(_sequence)}",
        password=password, role=role,
    )


def make_model(code: str | None = None, *, modality: str = "llm", cny: tuple[str, ...] = ("1", "0.2", "2", "0", "0"),
               usd: tuple[str, ...] | None = None, effective_from: datetime = EPOCH) -> Model:
    """A catalog model with one price per currency from `effective_from` (input, cached, output,
    per image, per video second, and optionally the cache-write price: without it, cache writes are
    charged at the input price)."""
    model = Model.objects.create(
        code=code or f"model-{next(_sequence)}", name=(code or "Model").title(), provider="Test", modality=modality
    )
    for currency, prices in (("CNY", cny), ("USD", usd or cny)):
        add_price(model, currency, effective_from, prices)
    return model


def add_price(model: Model, currency: str, effective_from: datetime, prices: tuple[str, ...]):
    values = [Decimal(p) for p in prices]
    return billing_services.add_price(
        model=model, currency=currency, effective_from=effective_from, input_per_mtok=values[0],
        cached_input_per_mtok=values[1], output_per_mtok=values[2], per_image=values[3],
        per_video_second=values[4], cache_write_per_mtok=values[5] if len(values) > 5 else None,
    )


def make_plan(code: str | None = None, **fields: Any) -> Plan:
    defaults = {"name": "Plan", "monthly_fee": Decimal("99"), "rpm_limit": 600, "tpm_limit": 100_000,
                "max_keys": 10, "max_teams": 5}
    defaults.update(fields)
    return Plan.objects.create(code=code or f"plan-{next(_sequence)}", **defaults)


def make_inference_key(department: Department, *, owner: Member | None = None, name: str | None = None,
                       **fields: Any) -> tuple[InferenceKey, str]:
    issued = key_services.create_inference_key(
        actor=services.SYSTEM, department=department, owner=owner, name=name or f"key {next(_sequence)}", **fields
    )
    return issued.key, issued.secret


def event(key: InferenceKey, model: Model, *, request_id: str | None = None, timestamp: Any = None,
          **fields: Any) -> dict[str, Any]:
    """A gateway usage event as the ingestion API receives it."""
    payload = {
        "request_id": request_id or f"req-{next(_sequence)}",
        "timestamp": timestamp if timestamp is not None else "2026-03-01T10:00:00+00:00",
        "key_id": str(key.uuid),
        "model": model.code,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "latency_ms": 800,
        "status_code": 200,
    }
    payload.update(fields)
    return payload
