"""Fixed log-scale latency bins (as DDSketch does): mergeable by adding counts, and any
percentile read from them is within RELATIVE_ACCURACY of the exact value.

Bin 0 holds 0 ms; bin i ≥ 1 holds latencies in (γ^(i-1), γ^i] with γ = (1+α)/(1-α), and reports
2γ^i/(γ+1), which is within α of every value in the bin.
"""

import math
from collections.abc import Iterable

RELATIVE_ACCURACY = 0.015  # α: under the 2 % the contract allows, with room for interpolation
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MAX_BIN = 32767


def bin_of(latency_ms: int) -> int:
    if latency_ms <= 0:
        return 0
    # +1 keeps 1 ms out of bin 0; the tiny epsilon guards exact powers of γ against rounding up.
    return min(MAX_BIN, max(1, math.ceil(math.log(latency_ms) / _LOG_GAMMA - 1e-9)) + 1)


def value_of(bin_index: int) -> float:
    if bin_index <= 0:
        return 0.0
    upper = GAMMA ** (bin_index - 1)
    return 2 * upper / (GAMMA + 1)


def percentile(counts: Iterable[tuple[int, int]], q: float) -> float | None:
    """The q-th percentile (0–100) of a histogram given as (bin, count) pairs; None if empty."""
    ordered = sorted((b, c) for b, c in counts if c > 0)
    total = sum(c for _, c in ordered)
    if total == 0:
        return None
    # The rank a nearest-rank percentile would pick (1-based), as the exact value is read.
    rank = max(1, math.ceil(q / 100 * total))
    seen = 0
    for bin_index, count in ordered:
        seen += count
        if seen >= rank:
            return value_of(bin_index)
    return value_of(ordered[-1][0])
