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


@dataclass(frozen=True, slots=True)
class Cost:
    total: Decimal
    input: Decimal  # uncached prompt tokens
    cache_read: Decimal  # cached prompt tokens
    output: Decimal
    units: Decimal  # images and video seconds


class Rates:
    """One price with one discount applied, per single token, image or video second. Exact:
    prices have 8 places and discounts 4, so nothing is rounded until the event's parts are.
    Ingestion builds one per (price, discount) in a batch rather than one per event."""

    __slots__ = ("input", "cache_read", "output", "image", "video_second")

    def __init__(self, price: Price, discount: Decimal) -> None:
        self.input = price.input_per_mtok * discount / TOKENS_PER_PRICE_UNIT
        self.cache_read = price.cached_input_per_mtok * discount / TOKENS_PER_PRICE_UNIT
        self.output = price.output_per_mtok * discount / TOKENS_PER_PRICE_UNIT
        self.image = price.per_image * discount
        self.video_second = price.per_video_second * discount

    def cost(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int, image_count: int,
             video_seconds: int) -> Cost:
        exact_input = (prompt_tokens - cached_tokens) * self.input
        exact_cache_read = cached_tokens * self.cache_read
        exact_output = completion_tokens * self.output
        exact_units = image_count * self.image + video_seconds * self.video_second
        total = round_event_amount(exact_input + exact_cache_read + exact_output + exact_units)
        parts = [round_event_amount(exact_input), round_event_amount(exact_cache_read),
                 round_event_amount(exact_output), round_event_amount(exact_units)]
        residue = total - sum(parts)
        if residue:
            largest = parts.index(max(parts))  # the first of equal parts, in the order above
            parts[largest] += residue
        return Cost(total, *parts)


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
    return Rates(price, discount).cost(prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                                       completion_tokens=completion_tokens, image_count=image_count,
                                       video_seconds=video_seconds)


def event_cost(price: Price, **quantities) -> Decimal:
    return rate(price, **quantities).total
