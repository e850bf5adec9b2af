"""Fixed log-scale latency bins (as DDSketch does): mergeable by adding counts, and any
percentile read from them is within RELATIVE_ACCURACY of the exact value.

Bin 0 holds 0 ms; bin i ≥ 1 holds latencies in (γ^(i-1), γ^i] with γ = (1+α)/(1-α), and reports
2γ^i/(γ+1), which is within α of every value in the bin.
"""

import bisect
import itertools
import json
import math
import operator
from collections.abc import Iterable, Mapping, Sequence

RELATIVE_ACCURACY = 0.015  # α: under the 2 % the contract allows, with room for interpolation
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MAX_BIN = 32767


def bin_of(latency_ms: int) -> int:
    if latency_ms <= 0:
        return 0
    # +1 keeps 1 ms out of bin 0; the tiny epsilon guards exact powers of γ against rounding up.
    return min(MAX_BIN, max(1, math.ceil(math.log(latency_ms) / _LOG_GAMMA - 1e-9)) + 1)


def _value(bin_index: int) -> float:
    if bin_index <= 0:
        return 0.0
    upper = GAMMA ** (bin_index - 1)
    return 2 * upper / (GAMMA + 1)


# Bins up to 1,024 cover latencies up to 10^13 ms; reading percentiles looks their values up.
_VALUES = tuple(_value(index) for index in range(1024))


def value_of(bin_index: int) -> float:
    return _VALUES[bin_index] if 0 <= bin_index < len(_VALUES) else _value(bin_index)


def dense(counts: Mapping[int, int]) -> list[int]:
    """{bin: count} as the dense list the rollups store (element i counts bin i)."""
    bins = [0] * (max(counts) + 1 if counts else 0)
    for bin_index, count in counts.items():
        bins[bin_index] += count
    return bins


def add(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Two dense histograms merged: element-wise sums, as long as the longer one."""
    if len(a) < len(b):
        a, b = b, a
    return [*map(operator.add, a, b), *a[len(b):]]


def add_bins_json(a: str | None, b: str | None) -> str:
    """`usage_bins_add` for SQLite, which keeps the lists as JSON text."""
    return json.dumps(add(json.loads(a or "[]"), json.loads(b or "[]")), separators=(",", ":"))


def percentiles(bins: Sequence[int], qs: Iterable[float], first_bin: int = 0) -> dict[float, float | None]:
    """The q-th percentiles (0–100) of a dense histogram whose element 0 counts bin `first_bin`
    (a histogram read without its empty low bins); None where it is empty.

    The statistic is PostgreSQL's percentile_cont (numpy's default): with n events, the q-th
    percentile lies at 0-based rank h = (n − 1)·q/100, between the events ranked ⌊h⌋ and ⌈h⌉,
    interpolated linearly. Each of those two events is read as its bin's value, within α of the
    real one, so their interpolation is within α of the exact percentile too."""
    cumulative = list(itertools.accumulate(bins))
    total = cumulative[-1] if cumulative else 0
    if total == 0:
        return dict.fromkeys(qs)

    result = {}
    for q in qs:
        position = (total - 1) * q / 100
        below = math.floor(position)
        index = bisect.bisect_right(cumulative, below)  # the bin of the event ranked `below` (0-based)
        value = value_of(first_bin + index)
        if position > below and cumulative[index] == below + 1:  # the next event is in a higher bin
            following = value_of(first_bin + bisect.bisect_right(cumulative, below + 1, index))
            value += (position - below) * (following - value)
        result[q] = value
    return result


def sql_bin_of(latency_sql: str) -> str:
    """bin_of in SQL, for reading a histogram only from the bin of its smallest latency on. Floating
    point may put a value one bin off at an exact power of γ: callers start one bin lower."""
    return (f"(CASE WHEN {latency_sql} <= 0 THEN 0 ELSE "
            f"CAST(CEIL(LN({latency_sql}) / {_LOG_GAMMA!r} - 1e-9) AS integer) + 1 END)")


def percentile(bins: Sequence[int], q: float) -> float | None:
    return percentiles(bins, (q,))[q]
