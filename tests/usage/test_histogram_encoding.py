"""The stored latency histogram (usage/histogram.py: cumulative counts from the first non-empty
bin): the SQL that folds it and the SQL that reads percentiles from it must agree with the
Python definitions, on both databases; and the data migration re-encodes stored hours."""

import json
import math

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usage import histogram

# The fold's SQL functions exist only on PostgreSQL (SQLite folds in Python, tested above and in the
# property tests): their tests are defined only there, so CI (PostgreSQL) runs them and no run
# reports a skip.
ON_POSTGRESQL = connection.vendor == "postgresql"

# Sparse {bin: count} histograms over a realistic range of bins (bin 0 is 0 ms).
counts = st.dictionaries(st.integers(min_value=0, max_value=420), st.integers(min_value=1, max_value=5000),
                         max_size=40)
nonempty_counts = counts.filter(bool)
percentile_qs = st.lists(st.sampled_from([0, 1, 25, 50, 90, 95, 99, 99.9, 100]), min_size=1, max_size=4, unique=True)


def _summed(*histograms: dict[int, int]) -> dict[int, int]:
    total: dict[int, int] = {}
    for histogram_counts in histograms:
        for bin_index, count in histogram_counts.items():
            total[bin_index] = total.get(bin_index, 0) + count
    return total


def _exact(values: list[int], q: float) -> float:
    position = (len(values) - 1) * q / 100
    below = math.floor(position)
    return values[below] + (position - below) * (values[min(below + 1, len(values) - 1)] - values[below])


@given(counts)
def test_encoding_round_trips(bins):
    encoded = histogram.encode(bins)
    assert histogram.decode(encoded) == bins
    assert histogram.total(encoded) == sum(bins.values())
    if encoded:
        assert histogram.first_bin(encoded) == min(bins) and histogram.last_bin(encoded) == max(bins)
        assert encoded == sorted(encoded)  # so width_bucket and bisect search it as stored


@given(counts, counts)
def test_adding_encoded_histograms_adds_their_counts(a, b):
    assert histogram.add(histogram.encode(a), histogram.encode(b)) == histogram.encode(_summed(a, b))


@given(st.lists(nonempty_counts, min_size=1, max_size=6), percentile_qs)
def test_percentiles_of_several_hours_are_those_of_their_sum(hours, qs):
    merged = histogram.encode(_summed(*hours))
    # The binary search over several hours' cumulative counts lands on the bins a merged histogram has.
    assert histogram.percentiles([histogram.encode(hour) for hour in hours], qs) == histogram.percentiles([merged], qs)


@given(st.lists(st.integers(min_value=0, max_value=600_000), min_size=1, max_size=300), percentile_qs)
def test_percentiles_are_within_two_percent_of_percentile_cont(latencies, qs):
    bins: dict[int, int] = {}
    for latency in latencies:
        bins[histogram.bin_of(latency)] = bins.get(histogram.bin_of(latency), 0) + 1
    estimates = histogram.percentiles([histogram.encode(bins)], qs)
    ordered = sorted(latencies)
    for q in qs:
        exact = _exact(ordered, q)
        assert abs(estimates[q] - exact) <= histogram.RELATIVE_ACCURACY * exact + 1e-9, (q, estimates[q], exact)


def _sql_value(sql: str, params: list) -> object:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def _as_list(value: object) -> list[int]:
    return json.loads(value) if isinstance(value, str) else value


def _sql_array(encoded: list[int]) -> tuple[str, object]:
    if connection.vendor == "postgresql":
        return "CAST(%s AS integer[])", encoded
    return "%s", json.dumps(encoded)


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=counts, b=counts)
def test_usage_bins_add_in_sql_adds_counts(a, b):
    """The upserts' merge (PL/pgSQL on PostgreSQL, histogram.add_bins_json on SQLite) against the
    definition: in place when the new bins fit the stored range, a longer array when they do not."""
    (left, left_param), (right, right_param) = _sql_array(histogram.encode(a)), _sql_array(histogram.encode(b))
    merged = _sql_value(f"SELECT usage_bins_add({left}, {right})", [left_param, right_param])
    assert _as_list(merged) == histogram.encode(_summed(a, b))


if ON_POSTGRESQL:
    @pytest.mark.django_db
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(bins=nonempty_counts)
    def test_usage_bins_dense_in_sql_encodes_a_batch(bins):
        """The fold statement's per-batch encoding of (bin, count) pairs, ascending by bin."""
        pairs = sorted(bins.items())
        encoded = _sql_value("SELECT usage_bins_dense(%s, %s)", [[b for b, _ in pairs], [n for _, n in pairs]])
        assert encoded == histogram.encode(bins)


if ON_POSTGRESQL:
    @pytest.mark.django_db
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(bins=nonempty_counts, qs=percentile_qs)
    def test_rank_bins_in_sql_match_python(bins, qs):
        """Per-hour percentiles: PostgreSQL's width_bucket over the cumulative counts finds the bins
        Python's bisect finds, and the rank is floored the same way."""
        encoded = histogram.encode(bins)
        columns = [column for q in qs for column in histogram.sql_rank_bins("h", q)]
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {', '.join(columns)} FROM (SELECT CAST(%s AS integer[]) AS h) AS stored", [encoded])
            found = cursor.fetchone()
        n = histogram.total(encoded)
        for index, q in enumerate(qs):
            _below, fraction = histogram.ranks(n, q)
            value = histogram.interpolate(found[2 * index], found[2 * index + 1], fraction)
            assert value == histogram.percentiles([encoded], (q,))[q]


# --- the data migration ---------------------------------------------------------------------

DENSE_HOURS = {  # hour -> dense per-bin counts, as 0006 stored them (element i counts bin i)
    0: [0, 0, 3, 0, 5],
    3600: [2],
    7200: [0] * 150 + [1] + [0] * 30 + [7, 0, 0],
    10800: [],
}
ENCODED_HOURS = {0: [-2, 3, 3, 8], 3600: [0, 2], 7200: [-150, 1] + [1] * 30 + [8], 10800: []}


@pytest.mark.django_db(transaction=True)
def test_the_migration_reencodes_stored_hours_and_back():
    executor = MigrationExecutor(connection)
    before, after = [("usage", "0008_rowpages")], [("usage", "0009_percentiles")]
    try:
        executor.migrate(before)
        old_apps = executor.loader.project_state(before).apps
        hourly = old_apps.get_model("usage", "UsageHourly")
        for hour, dense in DENSE_HOURS.items():  # rollups carry no foreign-key constraint
            hourly.objects.create(organization_id=1, hour=hour, currency="CNY", latency_bins=dense)

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        new_apps = executor.loader.project_state(after).apps
        stored = dict(new_apps.get_model("usage", "UsageHourly").objects.values_list("hour", "latency_bins"))
        assert stored == ENCODED_HOURS
        assert {hour: histogram.decode(bins) for hour, bins in stored.items()} == {
            hour: {i: n for i, n in enumerate(dense) if n} for hour, dense in DENSE_HOURS.items()}

        executor = MigrationExecutor(connection)
        executor.migrate(before)
        restored = dict(hourly.objects.values_list("hour", "latency_bins"))
        assert restored == {hour: dense[:max((i for i, n in enumerate(dense) if n), default=-1) + 1]
                            for hour, dense in DENSE_HOURS.items()}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("usage"))
