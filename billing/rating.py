"""Rating: what one event costs. The formula lives here and nowhere else.

cost = ((prompt − cached) × input + cached × cached_input + completion × output) / 1,000,000
       + images × per_image + video_seconds × per_video_second,
times the department's discount, kept to 8 places (billing.money.round_event_amount).
"""

from decimal import Decimal

from billing.models import Price
from billing.money import TOKENS_PER_PRICE_UNIT, round_event_amount


def event_cost(
    price: Price,
    *,
    discount: Decimal,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    image_count: int,
    video_seconds: int,
) -> Decimal:
    token_cost = (
        (prompt_tokens - cached_tokens) * price.input_per_mtok
        + cached_tokens * price.cached_input_per_mtok
        + completion_tokens * price.output_per_mtok
    ) / TOKENS_PER_PRICE_UNIT
    unit_cost = image_count * price.per_image + video_seconds * price.per_video_second
    return round_event_amount((token_cost + unit_cost) * discount)
