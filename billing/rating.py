"""Rating: what one event costs. The formula lives here and nowhere else.

cost = ((prompt − cached) × input + cached × cached_input + completion × output) / 1,000,000
       + images × per_image + video_seconds × per_video_second,
times the department's discount, kept to 8 places (billing.money.round_event_amount).

The cost is also split into parts (uncached input, cache reads, output, images and video) for
the dialects that show a breakdown. Each part is rounded on its own; the parts always add up to
the cost exactly, the rounding residue (at most a few 1e-8) going to the largest part.
"""

from dataclasses import dataclass
from decimal import Decimal

from billing.models import Price
from billing.money import TOKENS_PER_PRICE_UNIT, round_event_amount


@dataclass(frozen=True)
class Cost:
    total: Decimal
    input: Decimal  # uncached prompt tokens
    cache_read: Decimal  # cached prompt tokens
    output: Decimal
    units: Decimal  # images and video seconds


def rate(
    price: Price,
    *,
    discount: Decimal,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    image_count: int,
    video_seconds: int,
) -> Cost:
    exact = {
        "input": (prompt_tokens - cached_tokens) * price.input_per_mtok / TOKENS_PER_PRICE_UNIT * discount,
        "cache_read": cached_tokens * price.cached_input_per_mtok / TOKENS_PER_PRICE_UNIT * discount,
        "output": completion_tokens * price.output_per_mtok / TOKENS_PER_PRICE_UNIT * discount,
        "units": (image_count * price.per_image + video_seconds * price.per_video_second) * discount,
    }
    total = round_event_amount(sum(exact.values()))
    parts = {name: round_event_amount(value) for name, value in exact.items()}
    largest = max(parts, key=lambda name: parts[name])
    parts[largest] += total - sum(parts.values())
    return Cost(total=total, **parts)


def event_cost(price: Price, **quantities) -> Decimal:
    return rate(price, **quantities).total
