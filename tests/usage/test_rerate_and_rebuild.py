from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.models import AuditLog
from tests import factories
from tests.usage.raw_checks import assert_daily_levels_equal_raw_events
from usage import query
from usage.models import UsageDaily, UsageEvent
from usage.query import UsageQuery
from usage.services import ingest_events
from usage.timebuckets import Granularity

CORRECTION = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def billed(world):
    model = factories.make_model("qwen-plus", cny=("2", "0.5", "8", "0", "0"))
    key, _ = factories.make_inference_key(world.research)
    ingest_events([factories.event(key, model, request_id=f"jan-{i}", timestamp=f"2026-01-{10 + i}T12:00:00Z",
                                   prompt_tokens=1_000_000, completion_tokens=0) for i in range(3)]
                  + [factories.event(key, model, request_id=f"feb-{i}", timestamp=f"2026-02-{10 + i}T12:00:00Z",
                                     prompt_tokens=1_000_000, completion_tokens=0) for i in range(2)])
    return world, model


def _total(world) -> Decimal:
    q = UsageQuery(organization_id=world.acme.pk, start=datetime(2026, 1, 1, tzinfo=world.acme.zone),
                   end=datetime(2026, 3, 1, tzinfo=world.acme.zone), timezone=world.acme.timezone)
    return query.run(q).rows[0].cost


def test_a_price_correction_is_applied_only_by_an_explicit_rerate(billed):
    world, model = billed
    assert _total(world) == Decimal("10.00000000")
    # A corrected price for February: the past stays frozen until someone re-rates.
    factories.add_price(model, "CNY", CORRECTION, ("1", "0.5", "8", "0", "0"))
    assert _total(world) == Decimal("10.00000000")
    out = StringIO()
    call_command("rerate", "--org", world.acme.slug, "--from", "2026-01-01", "--to", "2026-03-01", stdout=out)
    assert "5 events checked, 2 re-rated" in out.getvalue() and "qwen-plus: 2 events" in out.getvalue()
    assert _total(world) == Decimal("8.00000000")
    assert set(UsageEvent.objects.filter(request_id__startswith="feb").values_list("cost", flat=True)) == {
        Decimal("1.00000000")}
    days = UsageDaily.objects.filter(organization=world.acme)
    assert sum(d.cost_units for d in days) == 8 * 10**8
    assert_daily_levels_equal_raw_events()
    assert AuditLog.objects.filter(action="usage.rerate", organization=world.acme).exists()
    # Re-rating again changes nothing.
    out = StringIO()
    call_command("rerate", "--org", world.acme.slug, "--from", "2026-01-01", "--to", "2026-03-01", stdout=out)
    assert "0 re-rated" in out.getvalue()


@pytest.mark.parametrize("args", [["--from", "2026-03-01", "--to", "2026-01-01"], ["--from", "soon", "--to", "x"],
                                  ["--from", "2026-01-01T00:00:00", "--to", "2026-02-01"],
                                  ["--from", "2026-13-01", "--to", "2026-14-01"]],
                         ids=["reversed", "garbage", "naive-datetime", "impossible-date"])
def test_rerate_refuses_bad_ranges(billed, args):
    world, _ = billed
    with pytest.raises(CommandError):
        call_command("rerate", "--org", world.acme.slug, *args)


def test_a_timezone_change_is_followed_by_a_rebuild(billed):
    world, _ = billed
    world.acme.timezone = "America/New_York"
    world.acme.save()
    call_command("rebuild_rollups", "--org", world.acme.slug, stdout=StringIO())
    q = UsageQuery(organization_id=world.acme.pk, start=datetime(2026, 1, 10, tzinfo=world.acme.zone),
                   end=datetime(2026, 1, 13, tzinfo=world.acme.zone), timezone="America/New_York",
                   granularity=Granularity.of("day"))
    assert query.run(q).level == query.ORGANIZATION_DAILY
    for level in (query.ORGANIZATION_DAILY, query.MODEL_DAILY, query.DEPARTMENT_DAILY, query.DAILY, query.HOURLY,
                  query.FINE, query.RAW):
        assert [row.requests for row in query.run(q, level=level).rows] == [1, 1, 1], level
    assert_daily_levels_equal_raw_events()


def test_a_new_cache_write_price_rerates_cache_writes_only(world):
    model = factories.make_model("claude-like", cny=("3", "0.3", "15", "0", "0"))  # writes charged as input
    key, _ = factories.make_inference_key(world.research)
    ingest_events([factories.event(key, model, request_id="w", timestamp="2026-02-10T12:00:00Z",
                                   prompt_tokens=1_000_000, cached_tokens=0, cache_creation_tokens=400_000,
                                   completion_tokens=0)])
    assert UsageEvent.objects.get().cost == Decimal("3.00000000")
    factories.add_price(model, "CNY", CORRECTION, ("3", "0.3", "15", "0", "0", "3.75"))
    call_command("rerate", "--org", world.acme.slug, "--from", "2026-02-01", "--to", "2026-03-01", stdout=StringIO())
    event = UsageEvent.objects.get()
    assert (event.cost, event.input_cost, event.cache_write_cost) == (
        Decimal("3.30000000"), Decimal("1.80000000"), Decimal("1.50000000"))  # 600,000 × 3 + 400,000 × 3.75
    assert sum(d.cache_write_cost_units for d in UsageDaily.objects.filter(organization=world.acme)) == 150_000_000
    assert sum(d.cache_creation_tokens for d in UsageDaily.objects.filter(organization=world.acme)) == 400_000
