"""Fixed log-scale latency bins (as DDSketch does): mergeable by adding counts, and any
percentile read from them is within RELATIVE_ACCURACY of the exact value.

Bin 0 holds 0 ms; bin i ≥ 1 holds latencies in (γ^(i-1), γ^i] with γ = (1+α)/(1-α), and reports
2γ^i/(γ+1), which is within α of every value in the bin.

Stored encoding (usage.models.LatencyBinsField): cumulative counts from the first non-empty bin,

    [−f, C(f), C(f+1), …, C(l)]        ([] when there are no events)

where f is the lowest non-empty bin, l the highest, and C(b) the number of events in bins ≤ b (so
C(l) is the total, and C(b) = 0 below f and C(l) above l). The first bin is stored negated so
that the whole array is sorted (−f ≤ 0 < C(f) ≤ …): a binary search runs over the stored array
itself, and PostgreSQL's `width_bucket` needs no copy of it (slicing the array first tripled the
per-hour percentile statement). The bins of an hour's latencies span a few hundred bins around
its median, not bin 0 to the top, and adding two histograms is still adding counts: the sum of
two cumulative histograms is the cumulative histogram of their union, with each one read as 0
below its f and as its total above its l (`add`). What the encoding buys is reading: the event
of 0-based rank r lies in the lowest bin b with C(b) > r, and bisect_right over the stored array
(`width_bucket` in SQL) gives 1 + the number of counts ≤ r, so b = f + that − 1, after about
log2(l − f) comparisons instead of adding up every bin. A one-hour bucket's percentiles are found
by PostgreSQL and only their bins leave the database; a longer bucket's hours are sent whole,
from their first non-empty bin on (about half the bins of the old dense lists at ten million
events), and added up in Python.
"""

import bisect
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


# --- the stored encoding -------------------------------------------------------------------

def encode(counts: Mapping[int, int]) -> list[int]:
    """{bin: count} as the rollups store it: [−first non-empty bin, cumulative counts to the last]."""
    occupied = sorted(bin_index for bin_index, count in counts.items() if count)
    if not occupied:
        return []
    first = occupied[0]
    encoded = [-first]
    running = 0
    for bin_index in range(first, occupied[-1] + 1):
        running += counts.get(bin_index, 0)
        encoded.append(running)
    return encoded


def first_bin(encoded: Sequence[int]) -> int:
    return -encoded[0]


def last_bin(encoded: Sequence[int]) -> int:
    return len(encoded) - 2 - encoded[0]


def decode(encoded: Sequence[int]) -> dict[int, int]:
    """The stored encoding back as {bin: count} of its non-empty bins."""
    if not encoded:
        return {}
    first, previous, counts = first_bin(encoded), 0, {}
    for offset, running in enumerate(encoded[1:]):
        if running != previous:
            counts[first + offset] = running - previous
        previous = running
    return counts


def total(encoded: Sequence[int]) -> int:
    return encoded[-1] if encoded else 0


def _spread(encoded: Sequence[int], low: int, high: int) -> list[int]:
    """One stored histogram's C(b) for every bin b from `low` to `high` (its range inside them)."""
    return [*([0] * (first_bin(encoded) - low)), *encoded[1:], *([encoded[-1]] * (high - last_bin(encoded)))]


def _summed(histograms: Sequence[Sequence[int]]) -> list[int]:
    """Several non-empty stored histograms added up, encoded as stored (element-wise in C: map
    over lists, no per-bin Python)."""
    low = min(first_bin(encoded) for encoded in histograms)
    high = max(last_bin(encoded) for encoded in histograms)
    summed = _spread(histograms[0], low, high)
    for encoded in histograms[1:]:
        summed = list(map(operator.add, summed, _spread(encoded, low, high)))
    return [-low, *summed]


def add(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Two stored histograms merged: the encoding of their per-bin sums."""
    if not a:
        return list(b)
    if not b:
        return list(a)
    return _summed((a, b))


def add_bins_json(a: str | None, b: str | None) -> str:
    """`usage_bins_add` for SQLite, which keeps the lists as JSON text."""
    return json.dumps(add(json.loads(a or "[]"), json.loads(b or "[]")), separators=(",", ":"))


# --- reading percentiles -------------------------------------------------------------------

def ranks(n: int, q: float) -> tuple[int, float]:
    """Where PostgreSQL's percentile_cont (numpy's default) puts the q-th percentile (0–100) of n
    values: between the events of 0-based ranks `below` and `below + 1`, `fraction` of the way.
    `sql_rank_bins` computes `below` with the same floating-point operations."""
    position = (n - 1) * q / 100
    below = math.floor(position)
    return below, position - below


def interpolate(low_bin: int, high_bin: int, fraction: float) -> float:
    value = value_of(low_bin)
    if fraction and high_bin != low_bin:
        value += fraction * (value_of(high_bin) - value)
    return value


def percentiles(histograms: Iterable[Sequence[int]], qs: Iterable[float]) -> dict[float, float | None]:
    """The q-th percentiles (0–100) of the sum of stored histograms; None where it is empty.

    The statistic is PostgreSQL's percentile_cont: with n events, the q-th percentile lies at
    0-based rank h = (n − 1)·q/100, between the events ranked ⌊h⌋ and ⌈h⌉, interpolated linearly.
    Each of those two events is read as its bin's value, within α of the real one, so their
    interpolation is within α of the exact percentile too: if x ≤ y are the two events and
    x', y' their bins' values with |x' − x| ≤ αx and |y' − y| ≤ αy, then for 0 ≤ t ≤ 1
    |(x' + t(y' − x')) − (x + t(y − x))| ≤ (1 − t)αx + tαy = α(x + t(y − x)).
    The bins of those ranks are found by binary search over the cumulative counts; several
    hours' histograms are added up first (each read as 0 below its first bin and as its total
    above its last)."""
    histograms, qs = [encoded for encoded in histograms if encoded], tuple(qs)
    if not histograms:
        return dict.fromkeys(qs)
    encoded = histograms[0] if len(histograms) == 1 else _summed(histograms)
    first, n = first_bin(encoded), encoded[-1]
    result = {}
    for q in qs:
        below, fraction = ranks(n, q)
        # bisect_right over the stored array: 1 + the cumulative counts ≤ the rank (see above).
        low_bin = first + bisect.bisect_right(encoded, below) - 1
        high_bin = first + bisect.bisect_right(encoded, below + 1) - 1 if fraction else low_bin
        result[q] = interpolate(low_bin, high_bin, fraction)
    return result


def percentile(encoded: Sequence[int], q: float) -> float | None:
    return percentiles((encoded,), (q,))[q]


def sql_rank_bins(bins_sql: str, q: float) -> tuple[str, str]:
    """PostgreSQL: the bins of the events ranked ⌊h⌋ and ⌊h⌋ + 1 (`ranks`) in one stored histogram
    (a non-empty `integer[]`, 1-based there). `width_bucket` is the binary search bisect_right is
    (the number of elements ≤ the rank), over the stored array as it is. The rank is computed
    as `ranks` computes it in Python, (n − 1) · q / 100 in double precision, floored."""
    n = f"{bins_sql}[cardinality({bins_sql})]"
    below = f"CAST(floor(CAST({n} - 1 AS double precision) * CAST({float(q)!r} AS double precision) / 100) AS integer)"
    return (f"width_bucket({below}, {bins_sql}) - 1 - {bins_sql}[1]",
            f"width_bucket({below} + 1, {bins_sql}) - 1 - {bins_sql}[1]")
