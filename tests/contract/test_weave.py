"""Weave dialect: POST /calls/stats, every bucket recomputed here from the raw events."""

import zoneinfo
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from tests.api_helpers import client_for, percentile_cont
from usage.api.weave import choose_granularity

STATS = "/calls/stats"


@pytest.fixture
def alice(history):
    return client_for(history.world.alice)


def _request(history, **overrides):
    body = {
        "project_id": str(history.world.acme.uuid),
        "start": (history.now - timedelta(days=3)).astimezone(UTC).isoformat(),
        "end": history.now.astimezone(UTC).isoformat(),
        "granularity": 21600,
        "timezone": "America/New_York",
        "usage_metrics": [{"metric": "input_tokens", "aggregations": ["sum", "avg", "min", "max", "count"],
                           "percentiles": [50]},
                          {"metric": "total_cost", "aggregations": ["sum"]},
                          {"metric": "input_cost", "aggregations": ["sum"]}],
        "call_metrics": [{"metric": "latency_ms", "aggregations": ["sum", "avg", "min", "max"],
                          "percentiles": [50, 99.9]},
                         {"metric": "call_count", "aggregations": ["sum"]},
                         {"metric": "error_count", "aggregations": ["sum", "max"]}],
    }
    body.update(overrides)
    return body


def _buckets_of(history, body):
    zone = zoneinfo.ZoneInfo(body["timezone"])
    start = datetime.fromisoformat(body["start"])
    end = datetime.fromisoformat(body["end"])
    origin = datetime.combine(start.astimezone(zone).date(), datetime.min.time(), tzinfo=zone)
    width = body["granularity"]
    events = [e for e in history.events if e.organization_id == history.world.acme.pk and start <= e.timestamp < end]
    by_bucket = defaultdict(list)
    for e in events:
        index = int((e.timestamp - origin).total_seconds() // width)
        by_bucket[(origin + timedelta(seconds=index * width)).astimezone(zone).isoformat()].append(e)
    first = int((start - origin).total_seconds() // width)
    last = int((end - timedelta(microseconds=1) - origin).total_seconds() // width)
    labels = [(origin + timedelta(seconds=i * width)).astimezone(zone).isoformat() for i in range(first, last + 1)]
    return labels, by_bucket


def test_call_buckets_match_the_raw_events(history, alice, schema_validator):
    body = _request(history)
    response = alice.post(STATS, body, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    schema_validator("/calls/stats", "post", answer)
    assert answer["granularity"] == 21600 and answer["timezone"] == "America/New_York"
    assert answer["start"].endswith("Z") and answer["end"].endswith("Z")
    labels, by_bucket = _buckets_of(history, body)
    assert [b["timestamp"] for b in answer["call_buckets"]] == labels  # every bucket, empty ones too
    for bucket in answer["call_buckets"]:
        events = by_bucket.get(bucket["timestamp"], [])
        latencies = [e.latency_ms for e in events]
        assert bucket["sum_call_count"] == len(events)
        assert bucket["sum_latency_ms"] == sum(latencies)
        assert bucket["sum_error_count"] == sum(e.status_code >= 400 for e in events)
        if events:
            assert bucket["min_latency_ms"] == min(latencies) and bucket["max_latency_ms"] == max(latencies)
            assert bucket["avg_latency_ms"] == pytest.approx(sum(latencies) / len(latencies), rel=1e-6)
            for q, column in ((50, "p50_latency_ms"), (99.9, "p99.9_latency_ms")):
                exact = percentile_cont(latencies, q)
                assert abs(bucket[column] - exact) <= 0.02 * exact, (column, bucket[column], exact)
            assert bucket["max_error_count"] == int(any(e.status_code >= 400 for e in events))
        else:
            assert bucket["min_latency_ms"] is None and bucket["p50_latency_ms"] is None
            assert bucket["avg_latency_ms"] is None


def test_usage_buckets_per_model_match_the_raw_events(history, alice):
    body = _request(history)
    answer = alice.post(STATS, body, format="json").json()
    labels, by_bucket = _buckets_of(history, body)
    seen_models = {e.model.code for events in by_bucket.values() for e in events}
    assert {(b["timestamp"], b["model"]) for b in answer["usage_buckets"]} == {
        (label, model) for label in labels for model in seen_models}
    for bucket in answer["usage_buckets"]:
        events = [e for e in by_bucket.get(bucket["timestamp"], []) if e.model.code == bucket["model"]]
        prompts = [e.prompt_tokens for e in events]
        assert bucket["count"] == bucket["count_input_tokens"] == len(events)
        assert bucket["sum_input_tokens"] == sum(prompts)
        assert Decimal(str(bucket["sum_total_cost"])) == sum((e.cost for e in events), Decimal(0))
        assert Decimal(str(bucket["sum_input_cost"])) == sum(
            (e.input_cost + e.cache_read_cost + e.cache_write_cost for e in events), Decimal(0))
        if events:
            assert (bucket["min_input_tokens"], bucket["max_input_tokens"]) == (min(prompts), max(prompts))
            assert bucket["p50_input_tokens"] == pytest.approx(percentile_cont(prompts, 50))
            assert bucket["avg_input_tokens"] == pytest.approx(sum(prompts) / len(prompts), rel=1e-6)
        else:
            assert bucket["min_input_tokens"] is None and bucket["sum_input_tokens"] == 0


def test_a_department_project_and_filters(history, alice):
    world = history.world
    body = _request(history, project_id=f"{world.acme.uuid}/{world.support.uuid}", granularity=86400,
                    filter={"op_names": ["chat"], "trace_roots_only": True}, usage_metrics=[],
                    call_metrics=[{"metric": "call_count", "aggregations": ["sum"]}])
    answer = alice.post(STATS, body, format="json").json()
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    expected = [e for e in history.events if e.department_id == world.support.pk and start <= e.timestamp < end
                and e.op_name == "chat" and e.parent_id is None]
    assert sum(b["sum_call_count"] for b in answer["call_buckets"]) == len(expected) > 0
    assert answer["usage_buckets"] == []


@pytest.mark.parametrize("span, requested, expected", [
    (timedelta(hours=2), None, 300), (timedelta(hours=3), None, 3600), (timedelta(days=3), None, 21600),
    (timedelta(days=10), None, 43200), (timedelta(days=40), None, 86400),
    (timedelta(days=30), 60, 30 * 86400 // 10000 + 1), (timedelta(hours=1), 60, 60)],
    ids=["2h", "3h", "3d", "10d", "40d", "capped", "kept"])
def test_granularity_is_chosen_as_weave_does(span, requested, expected):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert choose_granularity(start, start + span, requested) == expected


@pytest.mark.parametrize("change, field", [
    ({"surprise": 1}, "surprise"), ({"end": "2020-01-01T00:00:00Z"}, "end"), ({"timezone": "Mars/Base"}, "timezone"),
    ({"usage_metrics": [{"metric": "input_tokens", "percentiles": [101]}]}, "usage_metrics"),
    ({"usage_metrics": [{"metric": "weight"}]}, "usage_metrics"),
    ({"call_metrics": [{"metric": "latency_ms", "aggregations": ["median"]}]}, "call_metrics"),
    ({"filter": {"colour": ["red"]}}, "filter"), ({"start": "yesterday"}, "start"),
    ({"granularity": 0}, "granularity"), ({"project_id": 7}, "project_id"),
    ({"usage_metrics": [{"metric": "input_tokens", "percentiles": [-1]}]}, "usage_metrics"),
    ({"filter": {"trace_roots_only": "maybe"}}, "filter")],
    ids=["unknown-field", "end-before-start", "bad-zone", "percentile-over-100", "unknown-metric",
         "unknown-aggregation", "unknown-filter", "bad-start", "granularity-0", "project-not-a-string",
         "negative-percentile", "roots-not-bool"])
def test_bad_requests_are_422(history, alice, change, field):
    response = alice.post(STATS, _request(history, **change), format="json")
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"][:2] == ["body", field]


def test_another_organizations_project_is_not_found(history):
    charlie = client_for(history.world.charlie)
    response = charlie.post(STATS, _request(history), format="json")
    assert response.status_code == 404
    assert str(history.world.acme.uuid) not in response.content.decode()


def test_basic_auth_with_a_management_key_works(history):
    import base64

    from rest_framework.test import APIClient

    from keys import services
    from portal.services import SYSTEM

    secret = services.create_management_key(actor=SYSTEM, member=history.world.alice, name="weave").secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"api:{secret}".encode()).decode())
    assert client.post(STATS, _request(history), format="json").status_code == 200


# --- Weave's own types: every metric and aggregation, defaults, and nulls for unset fields ------

# weave 0.54's CallStatsParams (weave/vendor/weave_server_sdk/types/call_stats_params.py).
WEAVE_USAGE_METRICS = ("input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                       "cache_creation_input_tokens", "input_cost", "output_cost", "total_cost")
WEAVE_CALL_METRICS = ("latency_ms", "call_count", "error_count")
WEAVE_AGGREGATIONS = ("sum", "avg", "min", "max", "count", "count_true", "count_false")
WEAVE_FILTER = ("op_names", "input_refs", "output_refs", "parent_ids", "trace_ids", "call_ids", "thread_ids",
                "turn_ids", "trace_roots_only", "wb_user_ids", "wb_run_ids")
# Each Weave metric's value for one stored event, as Weave defines it.
USAGE_VALUE = {
    "input_tokens": lambda e: e.prompt_tokens,
    "output_tokens": lambda e: e.completion_tokens,
    "total_tokens": lambda e: e.prompt_tokens + e.completion_tokens,
    "cache_read_input_tokens": lambda e: e.cached_tokens,
    "cache_creation_input_tokens": lambda e: e.cache_creation_tokens,
    "input_cost": lambda e: e.input_cost + e.cache_read_cost + e.cache_write_cost,
    "output_cost": lambda e: e.output_cost,
    "total_cost": lambda e: e.cost,
}
CALL_VALUE = {"latency_ms": lambda e: e.latency_ms, "call_count": lambda e: 1,
              "error_count": lambda e: int(e.status_code >= 400)}


def _as_number(value):
    return Decimal(str(value))


def _check_aggregations(bucket, metric, values):
    """Every aggregation of `metric` in `bucket` against the bucket's per-event `values`."""
    assert _as_number(bucket[f"sum_{metric}"]) == sum(values, Decimal(0))
    assert bucket[f"count_{metric}"] == len(values)
    assert bucket[f"count_true_{metric}"] == sum(1 for v in values if v != 0)
    assert bucket[f"count_false_{metric}"] == sum(1 for v in values if v == 0)
    if values:
        assert _as_number(bucket[f"min_{metric}"]) == min(values)
        assert _as_number(bucket[f"max_{metric}"]) == max(values)
        # Kept to 8 places, as event amounts are.
        assert _as_number(bucket[f"avg_{metric}"]) == pytest.approx(sum(values, Decimal(0)) / len(values),
                                                                     abs=Decimal("0.00000001"))
    else:
        assert bucket[f"min_{metric}"] is bucket[f"max_{metric}"] is bucket[f"avg_{metric}"] is None


def test_every_weave_metric_with_every_aggregation_matches_the_raw_events(history, alice, schema_validator):
    body = _request(history, usage_metrics=[{"metric": m, "aggregations": list(WEAVE_AGGREGATIONS)}
                                            for m in WEAVE_USAGE_METRICS],
                    call_metrics=[{"metric": m, "aggregations": list(WEAVE_AGGREGATIONS)} for m in WEAVE_CALL_METRICS])
    response = alice.post(STATS, body, format="json")
    assert response.status_code == 200, response.content
    answer = response.json()
    schema_validator("/calls/stats", "post", answer)
    labels, by_bucket = _buckets_of(history, body)
    assert any(e.cache_creation_tokens for events in by_bucket.values() for e in events)
    assert [b["timestamp"] for b in answer["call_buckets"]] == labels
    for bucket in answer["call_buckets"]:
        events = by_bucket.get(bucket["timestamp"], [])
        assert bucket["count"] == len(events)
        for metric in WEAVE_CALL_METRICS:
            _check_aggregations(bucket, metric, [Decimal(CALL_VALUE[metric](e)) for e in events])
    assert answer["usage_buckets"]
    for bucket in answer["usage_buckets"]:
        events = [e for e in by_bucket.get(bucket["timestamp"], []) if e.model.code == bucket["model"]]
        for metric in WEAVE_USAGE_METRICS:
            _check_aggregations(bucket, metric, [Decimal(USAGE_VALUE[metric](e)) for e in events])


def test_cache_writes_cost_what_the_formula_says(history, alice):
    """API.md §1: cache writes at the cache-write price, or the input price where a model has none."""
    body = _request(history, usage_metrics=[{"metric": "cache_creation_input_tokens"}, {"metric": "total_cost"}],
                    call_metrics=[], granularity=259200)
    answer = alice.post(STATS, body, format="json").json()
    start, end = datetime.fromisoformat(body["start"]), datetime.fromisoformat(body["end"])
    events = [e for e in history.events if e.organization_id == history.world.acme.pk and start <= e.timestamp < end]
    for code in ("claude-sonnet", "qwen-plus"):
        mine = [e for e in events if e.model.code == code]
        assert sum(b["sum_cache_creation_input_tokens"] for b in answer["usage_buckets"] if b["model"] == code) == \
            sum(e.cache_creation_tokens for e in mine) > 0
        for e in mine:
            price = e.price
            cache_write = price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
            exact = ((e.prompt_tokens - e.cached_tokens - e.cache_creation_tokens) * price.input_per_mtok
                     + e.cached_tokens * price.cached_input_per_mtok + e.cache_creation_tokens * cache_write
                     + e.completion_tokens * price.output_per_mtok) / 1_000_000 * e.department.discount
            assert e.cost == exact.quantize(Decimal("0.00000001"))


def test_a_metric_given_alone_is_summed_as_weave_does(history, alice):
    body = _request(history, usage_metrics=[{"metric": "input_tokens", "aggregations": [], "percentiles": []}],
                    call_metrics=[{"metric": "call_count"}, {"metric": "latency_ms", "aggregations": [],
                                                             "percentiles": [50]}])
    answer = alice.post(STATS, body, format="json").json()
    labels, by_bucket = _buckets_of(history, body)
    for bucket in answer["call_buckets"]:
        assert set(bucket) == {"timestamp", "count", "sum_call_count", "p50_latency_ms"}
        assert bucket["sum_call_count"] == len(by_bucket.get(bucket["timestamp"], []))
    assert {key for bucket in answer["usage_buckets"] for key in bucket} == {
        "timestamp", "model", "count", "sum_input_tokens"}


def _weave_dumped(body):
    """`body` as a client built on Weave's Pydantic request types sends it: every field it leaves
    unset present as null, at every depth (model_dump without exclude_none)."""
    dumped = {"end": None, "granularity": None, "usage_metrics": None, "call_metrics": None, "filter": None,
              "timezone": None, **body}
    for kind in ("usage_metrics", "call_metrics"):
        if dumped[kind] is not None:
            dumped[kind] = [{"aggregations": None, "percentiles": None, **spec} for spec in dumped[kind]]
    if dumped["filter"] is not None:
        dumped["filter"] = {**dict.fromkeys(WEAVE_FILTER), **dumped["filter"]}
    return dumped


def test_nulls_for_unset_fields_at_any_depth_mean_not_given(history, alice):
    given = {"project_id": str(history.world.acme.uuid),
             "start": (history.now - timedelta(days=2)).astimezone(UTC).isoformat(),
             "usage_metrics": [{"metric": "cache_creation_input_tokens"}, {"metric": "input_cost"}],
             "call_metrics": [{"metric": "call_count"}, {"metric": "latency_ms", "percentiles": [50]}],
             "filter": {"op_names": ["chat"]}}
    with time_machine.travel(history.now, tick=False):  # `end` defaults to now
        plain = alice.post(STATS, given, format="json")
        nulls = alice.post(STATS, _weave_dumped(given), format="json")
        no_filter = alice.post(STATS, _weave_dumped({**given, "filter": None}), format="json")
        unfiltered = alice.post(STATS, {k: v for k, v in given.items() if k != "filter"}, format="json")
    assert plain.status_code == nulls.status_code == no_filter.status_code == 200, nulls.content
    assert nulls.json() == plain.json()
    assert nulls.json()["timezone"] == "UTC" and nulls.json()["granularity"] == 21600
    assert all("sum_cache_creation_input_tokens" in b for b in nulls.json()["usage_buckets"])
    assert no_filter.json() == unfiltered.json() != plain.json()


def test_only_weave_metrics_and_lists_take_nulls(history, alice):
    """A null where a value is required, or inside a list, is still refused, naming the field."""
    for change, location in (({"start": None}, ["body", "start"]), ({"project_id": None}, ["body", "project_id"]),
                             ({"usage_metrics": [{"metric": None}]}, ["body", "usage_metrics", "0", "metric"]),
                             ({"usage_metrics": [None]}, ["body", "usage_metrics", "0"]),
                             ({"filter": {"op_names": [None]}}, ["body", "filter", "op_names", "0"])):
        response = alice.post(STATS, _request(history, **change), format="json")
        assert response.status_code == 422, (change, response.content)
        assert [str(part) for part in response.json()["detail"][0]["loc"][: len(location)]] == location, \
            response.json()


def test_the_schema_documents_weaves_own_request(openapi_schema):
    schemas = openapi_schema["components"]["schemas"]
    usage, call = schemas["UsageMetricSpecRequest"]["properties"], schemas["CallMetricSpecRequest"]["properties"]
    def resolved(schema):
        return schemas[schema["$ref"].rsplit("/", 1)[-1]] if "$ref" in schema else schema

    assert set(resolved(usage["metric"])["enum"]) == set(WEAVE_USAGE_METRICS)
    assert set(resolved(call["metric"])["enum"]) == set(WEAVE_CALL_METRICS)
    for spec in (usage, call):
        assert tuple(resolved(spec["aggregations"]["items"])["enum"]) == WEAVE_AGGREGATIONS
        assert spec["aggregations"]["default"] == ["sum"] and spec["aggregations"]["nullable"] is True
        assert spec["percentiles"]["default"] == [] and spec["percentiles"]["nullable"] is True
        assert "nullable" not in spec["metric"]
    request = schemas["CallStatsRequest"]
    assert set(request["required"]) == {"project_id", "start"}
    for name in ("end", "granularity", "usage_metrics", "call_metrics", "filter", "timezone"):
        assert request["properties"][name]["nullable"] is True, name
    assert set(schemas["CallsFilterRequest"]["properties"]) == set(WEAVE_FILTER)
    assert all(field["nullable"] for field in schemas["CallsFilterRequest"]["properties"].values())
