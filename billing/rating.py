"""Rating: what one event costs. The formula lives here and nowhere else (API.md §1).

cost = ((prompt − cached − cache_creation) × input + cached × cached_input
        + cache_creation × cache_write + completion × output) / 1,000,000
       + images × per_image + video_seconds × per_video_second,
times the department's discount, kept to 8 places (billing.money.round_event_amount). Cache reads
(`cached`) and cache writes (`cache_creation`) are parts of the prompt; a price without a
cache-write price charges cache writes at its input price.

The cost is also split into parts (uncached input, cache reads, cache writes, output, images and
video) for the dialects that show a breakdown. Each part is rounded on its own; the parts always
add up to the cost exactly, the rounding residue (at most a few 1e-8) going to the largest part.
"""

from dataclasses import dataclass
from decimal import Decimal

from billing.models import Price
from billing.money import TOKENS_PER_PRICE_UNIT, round_event_amount


@dataclass(frozen=True, slots=True)
class Cost:
    total: Decimal
    input: Decimal  # prompt tokens neither read from nor written to a cache
    cache_read: Decimal  # cached prompt tokens
    cache_write: Decimal  # prompt tokens written to a cache
    output: Decimal
    units: Decimal  # images and video seconds


class Rates:
    """One price with one discount applied, per single token, image or video second. Exact:
    prices have 8 places and discounts 4, so nothing is rounded until the event's parts are.
    Ingestion builds one per (price, discount) in a batch rather than one per event."""

    __slots__ = ("input", "cache_read", "cache_write", "output", "image", "video_second")

    def __init__(self, price: Price, discount: Decimal) -> None:
        cache_write = price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
        self.input = price.input_per_mtok * discount / TOKENS_PER_PRICE_UNIT
        self.cache_read = price.cached_input_per_mtok * discount / TOKENS_PER_PRICE_UNIT
        self.cache_write = cache_write * discount / TOKENS_PER_PRICE_UNIT
        self.output = price.output_per_mtok * discount / TOKENS_PER_PRICE_UNIT
        self.image = price.per_image * discount
        self.video_second = price.per_video_second * discount

    def cost(self, *, prompt_tokens: int, cached_tokens: int, completion_tokens: int, image_count: int,
             video_seconds: int, cache_creation_tokens: int = 0) -> Cost:
        exact_input = (prompt_tokens - cached_tokens - cache_creation_tokens) * self.input
        exact_cache_read = cached_tokens * self.cache_read
        exact_cache_write = cache_creation_tokens * self.cache_write
        exact_output = completion_tokens * self.output
        exact_units = image_count * self.image + video_seconds * self.video_second
        total = round_event_amount(exact_input + exact_cache_read + exact_cache_write + exact_output + exact_units)
        parts = [round_event_amount(exact_input), round_event_amount(exact_cache_read),
                 round_event_amount(exact_cache_write), round_event_amount(exact_output),
                 round_event_amount(exact_units)]
        residue = total - sum(parts)
        if residue:
            largest = parts.index(max(parts))  # the first of equal parts, in the order above
            parts[largest] += residue
        input_part, cache_read, cache_write, output, units = parts
        return Cost(total=total, input=input_part, cache_read=cache_read, cache_write=cache_write, output=output,
                    units=units)


def rate(
    price: Price,
    *,
    discount: Decimal,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    image_count: int,
    video_seconds: int,
    cache_creation_tokens: int = 0,
) -> Cost:
    return Rates(price, discount).cost(prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                                       cache_creation_tokens=cache_creation_tokens,
                                       completion_tokens=completion_tokens, image_count=image_count,
                                       video_seconds=video_seconds)


def event_cost(price: Price, **quantities) -> Decimal:
    return rate(price, **quantities).total
