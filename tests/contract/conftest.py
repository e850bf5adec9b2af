"""A known usage history, shared by the dialects' contract tests: two organizations in two
zones, several departments, keys and models, errors, conversations, and events placed relative
to now so that "the last N days" has data on known local days."""

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.services import subscribe
from portal.services import SYSTEM
from tests import factories
from usage.models import UsageEvent
from usage.services import ingest_events


@dataclass
class History:
    world: object
    models: list
    keys: dict
    events: list = field(default_factory=list)  # stored UsageEvent rows, the ground truth
    now: datetime = None


@pytest.fixture
def history(ram_world):
    world = ram_world
    now = timezone.now()
    plan = factories.make_plan("team", rpm_limit=10)
    subscribe(actor=SYSTEM, organization=world.acme, plan=plan, started_at=now - timedelta(days=400))
    account = world.acme.billing_account
    account.monthly_budget = Decimal("50")
    account.save()
    marketing = factories.make_department(world.acme, "Marketing", discount=Decimal("0.9"))
    models = [factories.make_model("qwen-plus", cny=("0.8", "0.16", "2", "0", "0")),
              factories.make_model("deepseek-chat", cny=("2", "0.5", "8", "0", "0")),
              factories.make_model("wanx", modality="image", cny=("0", "0", "0", "0.14", "0")),
              # Anthropic-style: its cache writes cost more than input (the others' cost as input).
              factories.make_model("claude-sonnet", cny=("21.6", "2.16", "108", "0", "0", "27"))]
    keys = {
        "research": factories.make_inference_key(world.research, owner=world.alice)[0],
        "support": factories.make_inference_key(world.support, owner=world.bob)[0],
        "marketing": factories.make_inference_key(marketing, owner=world.amir)[0],
        "sales": factories.make_inference_key(world.sales, owner=world.charlie)[0],
    }
    rng = random.Random(42)
    batch = []
    for number in range(600):
        key = rng.choice(list(keys.values()))
        model = rng.choice(models)
        moment = now - timedelta(minutes=rng.randrange(0, 12 * 24 * 60))
        image = model.modality == "image"
        prompt = 0 if image else rng.randrange(10, 5000)
        cached = prompt // rng.choice([1, 3, 10, 100]) if prompt else 0
        batch.append(factories.event(
            key, model, request_id=f"h-{number}", timestamp=moment.astimezone(UTC).isoformat(),
            prompt_tokens=prompt, cached_tokens=cached,
            cache_creation_tokens=(prompt - cached) // rng.choice([1, 2, 5]) if rng.random() < 0.4 else 0,
            completion_tokens=0 if image else rng.randrange(0, 2000), image_count=rng.choice([1, 2]) if image else 0,
            input_chars=rng.randrange(0, 9000), output_chars=rng.randrange(0, 9000),
            latency_ms=rng.randrange(50, 30_000), status_code=rng.choice([200] * 9 + [500, 429]),
            conversation_id=rng.choice([None, f"c{rng.randrange(40)}"]), op_name=rng.choice(["chat", "embed"]),
            trace_id=f"t{number // 3}", parent_id=None if number % 3 == 0 else f"h-{number - number % 3}"))
    for start in range(0, len(batch), 250):
        ingest_events(batch[start : start + 250])
    world.marketing = marketing
    return History(world=world, models=models, keys=keys, now=now,
                   events=list(UsageEvent.objects.select_related("model", "department", "key")))
