"""The registries of measures and levels against what they describe: the rollup models (whose
fields migrations freeze), the query engine's rows, and each measure's SQL against its Python."""

import dataclasses

import pytest
from django.db import connection, models

from tests import factories
from usage.levels import DIMENSIONS, LEVELS, ROLLUPS
from usage.measures import EVENT_VALUES, MEASURE_NAMED, MEASURES, ROW_MEASURES, SUMMED, Merge
from usage.models import RollupMetrics, UsageEvent
from usage.query import SUM_FIELDS, Row
from usage.services import ingest_events


def test_every_rollup_row_keeps_every_measure_but_the_histogram():
    fields = {field.name for field in RollupMetrics._meta.get_fields()} - {"currency"}
    assert fields == {measure.name for measure in ROW_MEASURES}


def test_money_measures_are_signed_whole_units():
    for measure in MEASURES:
        if measure.money:
            assert type(RollupMetrics._meta.get_field(measure.name)) is models.BigIntegerField, measure.name


@pytest.mark.parametrize("level", ROLLUPS, ids=lambda level: level.name)
def test_a_level_is_its_model(level):
    model = level.model
    metric_fields = {field.name for field in model._meta.concrete_fields} & {m.name for m in MEASURES}
    assert metric_fields == set(level.metric_columns)
    (unique,) = model._meta.constraints
    assert [model._meta.get_field(name).column for name in unique.fields] == list(level.key_columns)
    assert {field.column for field in model._meta.concrete_fields} == {
        "id", *level.key_columns, *level.metric_columns}


def test_the_engine_rows_and_sums_come_from_the_registry():
    names = [field.name for field in dataclasses.fields(Row)]
    assert names == ["bucket", "group", *(m.name for m in ROW_MEASURES), "conversations", "percentiles",
                     "distributions", "true_counts"]
    assert SUM_FIELDS == tuple(measure.name for measure in SUMMED)
    assert [level.name for level in LEVELS] == ["raw", "fine", "model_hourly", "hourly", "key_daily",
                                                "department_key_daily", "daily", "department_daily", "model_daily",
                                                "organization_daily"]


def test_each_measure_and_dimension_reads_the_same_in_sql_and_in_python(world):
    model = factories.make_model("qwen-plus", cny=("2", "0.5", "8", "0.01", "0.02", "2.5"))
    owned, _ = factories.make_inference_key(world.research, owner=world.bob)
    unowned, _ = factories.make_inference_key(world.support)
    ingest_events([
        factories.event(owned, model, request_id="ok", prompt_tokens=1234, cached_tokens=234, completion_tokens=99,
                        cache_creation_tokens=600, image_count=2, video_seconds=3, latency_ms=820, status_code=200),
        factories.event(unowned, model, request_id="limited", prompt_tokens=7, completion_tokens=0, latency_ms=3,
                        status_code=429),
        factories.event(owned, model, request_id="failed", prompt_tokens=1, completion_tokens=5, latency_ms=60_000,
                        status_code=503),
    ])
    events = list(UsageEvent.objects.order_by("id"))
    with connection.cursor() as cursor:
        for measure in MEASURES:
            if measure.merge is Merge.HISTOGRAM:
                continue
            cursor.execute(f"SELECT {measure.over_events(connection.vendor)} FROM usage_usageevent")
            (aggregate,) = cursor.fetchone()
            folded = measure.empty
            for event in events:
                folded = measure.merge.combine(folded, measure.of_event(event))
            assert int(aggregate) == folded, measure.name
        for dimension in DIMENSIONS:
            cursor.execute(f"SELECT {dimension.folded_sql} FROM usage_usageevent ORDER BY id")
            assert [value for (value,) in cursor.fetchall()] == [dimension.of_event(e) for e in events], dimension.name
        # A value counted by a measure is 0 or 1 per event, and 1 exactly where it is non-zero.
        for value in EVENT_VALUES:
            if value.counted_by is None:
                continue
            measure = MEASURE_NAMED[value.counted_by]
            cursor.execute(f"SELECT {value.event_sql} FROM usage_usageevent ORDER BY id")
            assert [int(v != 0) for (v,) in cursor.fetchall()] == [measure.of_event(e) for e in events], value.name


def test_every_event_value_is_added_up_by_a_row_reading():
    for value in EVENT_VALUES:
        assert hasattr(Row, value.total), value.name
        assert value.counted_by is None or MEASURE_NAMED[value.counted_by] in SUMMED, value.name
