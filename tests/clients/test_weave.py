"""W&B Weave's own client, weave==0.54.0, against our `POST /calls/stats` (API.md §5).

Client: `weave.trace_server_bindings.remote_http_trace_server.RemoteHTTPTraceServer(base_url)`
with `set_auth(("api", management_key))` (HTTP Basic, user "api", as Weave authenticates), method
`call_stats(req)`, answer parsed into weave's `CallStatsResponse`. The requests are built from
weave's own types (probes/weave_call_stats.py): as its `CallStatsParams` TypedDict with only the
fields a caller sets, and as a Pydantic model of the same types, which the binding sends with
every unset field as null. Every expected number is recomputed from the events the world sent.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from tests.clients import clientenv
from tests.clients.world import LIVE_DATABASE, MILLION, ClientWorld, Tenant

pytestmark = LIVE_DATABASE

GRANULARITY = 21600  # six hours: a fixed width, aligned to the UTC midnight of `start`
EVERY_USAGE_METRIC = ["input_tokens", "output_tokens", "total_tokens", "cache_read_input_tokens",
                      "cache_creation_input_tokens", "input_cost", "output_cost", "total_cost"]
SET_USAGE_METRICS = [
    {"metric": "input_tokens", "aggregations": ["sum", "avg", "min", "max", "count"], "percentiles": [50]},
    *({"metric": name, "aggregations": ["sum"]} for name in
      ("output_tokens", "total_tokens", "cache_read_input_tokens", "input_cost", "output_cost", "total_cost")),
]
SET_CALL_METRICS = [
    {"metric": "latency_ms", "aggregations": ["sum", "avg", "min", "max"], "percentiles": [50, 95]},
    {"metric": "call_count", "aggregations": ["sum"]},
    {"metric": "error_count", "aggregations": ["sum"]},
]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def collect_answers(world: ClientWorld) -> dict:
    northwind, cachewrite = world.northwind.uuid, world.cachewrite.uuid
    start, end = _iso(world.start), _iso(world.now)
    requests = [
        {"name": "only_set_fields", "form": "typed_dict", "body": {
            "project_id": northwind, "start": start, "end": end, "granularity": GRANULARITY, "timezone": "UTC",
            "usage_metrics": SET_USAGE_METRICS, "call_metrics": SET_CALL_METRICS}},
        {"name": "unset_fields_as_nulls", "form": "pydantic", "body": {
            "project_id": northwind, "start": start,
            "usage_metrics": SET_USAGE_METRICS, "call_metrics": SET_CALL_METRICS,
            "filter": {"op_names": ["chat", "embed"]}}},
        {"name": "default_aggregations", "form": "typed_dict", "body": {
            "project_id": northwind, "start": start, "end": end, "granularity": GRANULARITY,
            "usage_metrics": [{"metric": "input_tokens"}, {"metric": "total_cost"}],
            "call_metrics": [{"metric": "call_count"}, {"metric": "error_count"}]}},
        {"name": "count_true_and_count_false", "form": "typed_dict", "body": {
            "project_id": northwind, "start": start, "end": end, "granularity": GRANULARITY,
            "call_metrics": [{"metric": "error_count", "aggregations": ["count_true", "count_false", "sum"]},
                             {"metric": "call_count", "aggregations": ["count_true", "count_false"]}]}},
        {"name": "every_usage_metric_with_cache_writes", "form": "typed_dict", "body": {
            "project_id": cachewrite, "start": start, "end": end, "granularity": GRANULARITY,
            "usage_metrics": [{"metric": name, "aggregations": ["sum"]} for name in EVERY_USAGE_METRIC]}},
    ]
    # Each organization's project is asked with its own owner's key.
    return clientenv.run_probe(clientenv.WEAVE, "weave_call_stats", {
        "base_url": world.base_url, "api_key": world.northwind.management_key, "requests": requests[:-1],
    }) | clientenv.run_probe(clientenv.WEAVE, "weave_call_stats", {
        "base_url": world.base_url, "api_key": world.cachewrite.management_key, "requests": requests[-1:],
    })


# --- what the events say --------------------------------------------------------------------------


def _timestamp(event: dict) -> datetime:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))


def _per_model(world: ClientWorld, tenant: Tenant) -> dict[str, dict[str, Decimal]]:
    totals: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for event in tenant.events:
        model = world.models[event["model"]]
        prices = model.usd if tenant.currency == "USD" else model.cny
        discount = tenant.keys[event["key_id"]]["discount"]
        row = totals[event["model"]]
        prompt, completion = event["prompt_tokens"], event["completion_tokens"]
        row["input_tokens"] += prompt
        row["output_tokens"] += completion
        row["total_tokens"] += prompt + completion
        row["cache_read_input_tokens"] += event["cached_tokens"]
        row["cache_creation_input_tokens"] += event.get("cache_creation_tokens", 0)
        row["total_cost"] += world.cost(tenant, event)
        row["output_cost"] += completion * prices.output * discount / MILLION
        row["calls"] += 1
    for row in totals.values():
        row["input_cost"] = row["total_cost"] - row["output_cost"]
    return totals


def _answer(answers: dict, name: str) -> dict:
    outcome = answers[name]
    assert outcome["ok"], (f"weave 0.54.0 RemoteHTTPTraceServer.call_stats ({name}) failed: {outcome.get('error')}\n"
                           f"fields the client sent as null: {outcome['sent_nulls']}")
    assert outcome["parsed_type"] == "CallStatsResponse"
    return outcome["response"]


def _usage_sums(response: dict, metric_key: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for bucket in response["usage_buckets"]:
        value = bucket.get(metric_key)
        assert value is not None or bucket.get("count", 0) == 0, f"{metric_key} missing from {bucket}"
        sums[bucket["model"]] += value or 0
    return sums


def _close(actual: float, expected: Decimal, *, slack: Decimal = Decimal("0.00000001")) -> bool:
    return math.isclose(actual, float(expected), rel_tol=1e-9, abs_tol=float(slack))


def _assert_usage(world: ClientWorld, tenant: Tenant, response: dict, metrics: list[str], aggregation: str = "sum"):
    expected = _per_model(world, tenant)
    assert response["usage_buckets"], "no usage buckets"
    for metric in metrics:
        sums = _usage_sums(response, f"{aggregation}_{metric}")
        for model, row in expected.items():
            # Costs: the parts of each event are rounded on their own (8 places), so a sum of
            # many may differ from the exact sum by a few 1e-8.
            slack = Decimal("0.00000001") * (row["calls"] + 1)
            if metric in ("input_cost", "output_cost") and world.models[model].modality != "llm":
                continue
            assert _close(sums.get(model, 0), row[metric], slack=slack), (
                f"{aggregation}_{metric} of {model}: the client read {sums.get(model)}, the events say {row[metric]}")
        assert set(sums) <= set(expected), f"{metric}: models that sent no event: {set(sums) - set(expected)}"


def _call_buckets_expected(tenant: Tenant, origin: datetime) -> dict[int, list[dict]]:
    buckets: dict[int, list[dict]] = defaultdict(list)
    for event in tenant.events:
        buckets[int((_timestamp(event) - origin).total_seconds() // GRANULARITY)].append(event)
    return buckets


def _percentile_cont(values: list[int], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def _assert_call_totals(tenant: Tenant, response: dict, prefix: str = "sum") -> None:
    buckets = response["call_buckets"]
    assert buckets, "no call buckets"
    calls = sum(bucket[f"{prefix}_call_count"] or 0 for bucket in buckets)
    errors = sum(bucket[f"{prefix}_error_count"] or 0 for bucket in buckets)
    assert calls == len(tenant.events)
    assert errors == sum(event["status_code"] >= 400 for event in tenant.events)
    if "sum_latency_ms" in buckets[0]:
        assert sum(bucket["sum_latency_ms"] or 0 for bucket in buckets) == sum(e["latency_ms"] for e in tenant.events)


# --- the tests ------------------------------------------------------------------------------------


def test_call_stats_with_only_the_fields_a_caller_sets(world, answers):
    """weave 0.54.0 `call_stats({...})` with a `CallStatsParams` dict: every bucket, sums per model,
    per-bucket latency minimum, maximum and percentiles (within 2 %), counts and errors."""
    response = _answer(answers, "only_set_fields")
    tenant = world.northwind
    assert response["granularity"] == GRANULARITY and response["timezone"] == "UTC"
    _assert_usage(world, tenant, response, [m["metric"] for m in SET_USAGE_METRICS])
    _assert_call_totals(tenant, response)
    by_bucket = _call_buckets_expected(tenant, world.start)
    for bucket in response["call_buckets"]:
        moment = datetime.fromisoformat(bucket["timestamp"].replace("Z", "+00:00"))
        events = by_bucket.get(int((moment - world.start).total_seconds() // GRANULARITY), [])
        assert (moment - world.start) % timedelta(seconds=GRANULARITY) == timedelta(0), bucket["timestamp"]
        assert bucket["sum_call_count"] == len(events)
        if not events:
            assert bucket["min_latency_ms"] is None and bucket["p50_latency_ms"] is None
            continue
        latencies = [event["latency_ms"] for event in events]
        assert bucket["min_latency_ms"] == min(latencies) and bucket["max_latency_ms"] == max(latencies)
        assert math.isclose(bucket["avg_latency_ms"], sum(latencies) / len(latencies), rel_tol=1e-9)
        for q in (50, 95):
            assert math.isclose(bucket[f"p{q}_latency_ms"], _percentile_cont(latencies, q), rel_tol=0.02), (
                f"p{q} of {latencies}: {bucket[f'p{q}_latency_ms']}")


def test_call_stats_with_unset_fields_sent_as_nulls(world, answers):
    """weave 0.54.0 `call_stats(model)` with a Pydantic model of Weave's own request types: the
    binding sends every unset field as null (end, granularity, timezone, the other filter lists,
    the metric specs' unset parts). API.md §5: a null is a field not given."""
    outcome = answers["unset_fields_as_nulls"]
    assert {"end", "granularity", "timezone", "filter.trace_ids"} <= set(outcome["sent_nulls"]), outcome["sent_nulls"]
    response = _answer(answers, "unset_fields_as_nulls")
    assert response["timezone"] == "UTC"  # null timezone: the default
    _assert_usage(world, world.northwind, response, [m["metric"] for m in SET_USAGE_METRICS])
    _assert_call_totals(world.northwind, response)


def test_call_stats_metric_specs_default_to_sum(world, answers):
    """Weave's metric specs default `aggregations` to ["sum"]: {"metric": "call_count"} answers
    sum_call_count."""
    response = _answer(answers, "default_aggregations")
    _assert_usage(world, world.northwind, response, ["input_tokens", "total_cost"])
    _assert_call_totals(world.northwind, response)


def test_call_stats_count_true_and_count_false(world, answers):
    """Weave's aggregations count_true / count_false: of error_count, the calls that failed and the
    calls that did not; of call_count, every call is true."""
    response = _answer(answers, "count_true_and_count_false")
    events = world.northwind.events
    buckets = response["call_buckets"]
    errors = sum(event["status_code"] >= 400 for event in events)
    assert sum(b["count_true_error_count"] or 0 for b in buckets) == errors
    assert sum(b["count_false_error_count"] or 0 for b in buckets) == len(events) - errors
    assert sum(b["sum_error_count"] or 0 for b in buckets) == errors
    assert sum(b["count_true_call_count"] or 0 for b in buckets) == len(events)
    assert sum(b["count_false_call_count"] or 0 for b in buckets) == 0


def test_call_stats_every_usage_metric_with_cache_writes(world, answers):
    """Every usage metric of Weave's enum, cache_creation_input_tokens included, on events that
    carry cache-creation tokens (API.md §2's `cache_creation_tokens`, priced at the cache-write
    price, which falls back to the input price)."""
    tenant = world.cachewrite
    outcome = answers["every_usage_metric_with_cache_writes"]
    assert tenant.refused is None, (f"the ingestion API refused events with cache_creation_tokens: {tenant.refused}\n"
                                    f"and call_stats, on the empty project, answered: {outcome.get('error', 'OK')}")
    assert any(event["cache_creation_tokens"] for event in tenant.events)
    response = _answer(answers, "every_usage_metric_with_cache_writes")
    _assert_usage(world, tenant, response, EVERY_USAGE_METRIC)
