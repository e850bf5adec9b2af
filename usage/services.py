"""Ingestion: validate a batch of gateway events, rate them, store them exactly once.

The contract (API.md §2): the whole batch is validated before anything is written; one bad
event rejects the batch with every problem listed; an event whose request_id is already
stored is skipped and counted as a duplicate. Storage is one set-based
`INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING`, so two connections replaying the
same batch at once still store each event once, and we learn exactly which rows were new.
"""

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from billing.catalog import PriceBook
from billing.models import BillingAccount, Model, Price
from billing.rating import Rates, rate
from keys.models import InferenceKey
from portal.models import Organization
from portal.services import Actor, record_audit
from usage import activity, folding
from usage.bulk import column_types, stored_rows, write_rows
from usage.levels import KEY_DAILY
from usage.models import TRACE_FIELD_LENGTH, UsageEvent, UsageFillState, UsageHourGroups, UsageKeyDailyRows
from usage.rollups import LEVELS, fold_events, organization_zones, store_and_queue
from usage.timebuckets import (
    SUPPORTED_RANGE,
    OutOfRange,
    checked_instant,
    epoch,
    instant_from_epoch,
    local_midnight,
    local_midnight_of,
)
from usage.wire import MAX_BATCH, ShapedEvents

logger = logging.getLogger(__name__)

REQUEST_ID_MAX_LENGTH = 128
COUNT_FIELDS = (
    "prompt_tokens", "completion_tokens", "cached_tokens", "cache_creation_tokens", "image_count", "video_seconds",
    "input_chars", "output_chars",
)
TRACE_FIELDS = ("op_name", "trace_id", "parent_id", "thread_id", "turn_id", "conversation_id")
REQUIRED_FIELDS = ("request_id", "timestamp", "key_id", "model", "latency_ms", "status_code")
KNOWN_FIELDS = frozenset(REQUIRED_FIELDS + COUNT_FIELDS + TRACE_FIELDS + ("error_type",))
# What an event stores as the gateway sent it (once validated).
_STORED_AS_VALIDATED = ("request_id", "timestamp", "latency_ms", "status_code", "error_type", *COUNT_FIELDS,
                        *TRACE_FIELDS)


@dataclass(frozen=True)
class FieldError:
    index: int | None  # position in the batch; None for a problem with the batch itself
    field: str
    message: str


class IngestValidationError(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} invalid field(s) in the batch")
        self.errors = errors


@dataclass(slots=True)
class RatedEvent:
    """A validated, rated event on its way into usage_usageevent, with the model's column names.
    A plain slotted object: building 1,000 Django model instances per batch would cost more than
    the insert. Rollups are folded from these (they read the same attributes as from UsageEvent)."""

    request_id: str
    timestamp: datetime
    organization_id: int
    department_id: int
    key_id: int
    member_id: int | None
    model_id: int
    price_id: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_creation_tokens: int
    image_count: int
    video_seconds: int
    input_chars: int
    output_chars: int
    latency_ms: int
    status_code: int
    error_type: str | None
    op_name: str | None
    trace_id: str | None
    parent_id: str | None
    thread_id: str | None
    turn_id: str | None
    conversation_id: str | None
    cost: Decimal
    input_cost: Decimal
    cache_read_cost: Decimal
    cache_write_cost: Decimal
    output_cost: Decimal
    currency: str
    received_at: datetime
    pk: int | None = None


@dataclass(frozen=True, slots=True)
class _KeyFacts:
    """What rating needs to know about an inference key."""

    pk: int
    organization_id: int
    department_id: int
    owner_id: int | None
    discount: Decimal


@dataclass(frozen=True)
class IngestResult:
    accepted: int
    duplicates: int
    inserted_ids: tuple[int, ...]
    # The cost of the newly stored events, by organization: what billing charges (duplicates cost nothing).
    charges: dict[int, Decimal] = field(default_factory=dict)


def _is_int(value: Any) -> bool:
    # JSON numbers arrive as exactly int; bool is an int subclass and must not pass.
    return type(value) is int


def _parse_timestamp(value: Any) -> datetime | None:
    # Outside the platform's instants (usage.timebuckets) an event could not be bucketed in every zone.
    if _is_int(value):
        try:
            return instant_from_epoch(value)
        except OutOfRange:
            return None
    if isinstance(value, str):
        try:
            parsed = parse_datetime(value)  # tries the C parser (fromisoformat) first itself
        except ValueError:
            return None
        if parsed is None or timezone.is_naive(parsed):
            return None
        try:
            return checked_instant(parsed).astimezone(UTC)
        except OutOfRange:
            return None
    return None


def _parse_uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _validate_shapes(events: Sequence[Any]) -> tuple[list[dict[str, Any]], list[FieldError]]:
    """Check each event's fields on their own, before any database lookup."""
    errors: list[FieldError] = []
    clean: list[dict[str, Any]] = []
    key_uuids: dict[Any, uuid.UUID | None] = {}  # a batch names the same keys over and over
    for index, raw in enumerate(events):
        if not isinstance(raw, Mapping):
            errors.append(FieldError(index, "", "each event must be a JSON object"))
            clean.append({})
            continue
        event: dict[str, Any] = {}
        if not KNOWN_FIELDS.issuperset(raw):
            for name in sorted(set(raw) - KNOWN_FIELDS):
                errors.append(FieldError(index, name, "unknown field"))
        for name in REQUIRED_FIELDS:
            if raw.get(name) is None:
                errors.append(FieldError(index, name, "field required"))
        request_id = raw.get("request_id")
        if request_id is not None:
            if not _is_text(request_id) or not 1 <= len(request_id) <= REQUEST_ID_MAX_LENGTH:
                errors.append(FieldError(index, "request_id", "must be a string of 1 to 128 characters, "
                                                              "without NUL characters"))
            event["request_id"] = request_id
        if raw.get("timestamp") is not None:
            parsed = _parse_timestamp(raw["timestamp"])
            if parsed is None:
                errors.append(FieldError(
                    index, "timestamp", f"must be Unix seconds or ISO 8601 with a UTC offset, {SUPPORTED_RANGE}"))
            event["timestamp"] = parsed
        key_id = raw.get("key_id")
        if key_id is not None:
            try:
                parsed_uuid = key_uuids[key_id]
            except KeyError:
                parsed_uuid = key_uuids[key_id] = _parse_uuid(key_id)
            except TypeError:  # unhashable: a JSON list or object
                parsed_uuid = None
            if parsed_uuid is None:
                errors.append(FieldError(index, "key_id", "must be an inference key uuid"))
            else:
                event["key_uuid"] = parsed_uuid
        model = raw.get("model")
        if model is not None:
            if not _is_text(model):  # a JSON list or object would not even hash in the look-ups
                errors.append(FieldError(index, "model", "must be a model code string without NUL characters"))
            else:
                event["model"] = model
        for name in COUNT_FIELDS + ("latency_ms",):
            value = raw.get(name, 0)
            if value is None and name == "latency_ms":
                continue
            if not _is_int(value) or value < 0:
                errors.append(FieldError(index, name, "must be a non-negative integer"))
            event[name] = value
        status_code = raw.get("status_code")
        if status_code is not None:
            if not _is_int(status_code) or not 100 <= status_code <= 599:
                errors.append(FieldError(index, "status_code", "must be an HTTP status code (100-599)"))
            event["status_code"] = status_code
        _check_cache_tokens(index, event, errors)
        for name in TRACE_FIELDS + ("error_type",):
            value = raw.get(name)
            if value is not None and (not _is_text(value) or len(value) > TRACE_FIELD_LENGTH):
                errors.append(FieldError(index, name, "must be a string of at most 128 characters, without NUL "
                                                      "characters, or null"))
            event[name] = value
        clean.append(event)
    return clean, errors


def _is_text(value: Any) -> bool:
    """A string PostgreSQL can store: text columns refuse NUL (it was a 500, found by tests/fuzz).
    Lone surrogates never get here: portal.api.parsers refuses them as malformed JSON."""
    return isinstance(value, str) and "\x00" not in value


def _check_cache_tokens(index: int, event: dict[str, Any], errors: list[FieldError]) -> None:
    """Cache reads and cache writes are parts of the prompt (API.md §1): together no more than it.
    usage.wire refuses the same events (and leaves their wording to this)."""
    prompt, cached, created = (event.get(name) for name in ("prompt_tokens", "cached_tokens",
                                                            "cache_creation_tokens"))
    if not (_is_int(prompt) and prompt >= 0):
        return
    cached = cached if _is_int(cached) and cached >= 0 else None
    created = created if _is_int(created) and created >= 0 else None
    if cached is not None and cached > prompt:
        errors.append(FieldError(index, "cached_tokens", "cannot exceed prompt_tokens"))
    elif cached is not None and created is not None and cached + created > prompt:
        errors.append(FieldError(index, "cache_creation_tokens",
                                 "cached_tokens + cache_creation_tokens cannot exceed prompt_tokens"))


def ingest_events(events: Sequence[Any]) -> IngestResult:
    """Validate, rate and store a batch of events. Raises IngestValidationError, storing nothing.
    Events already shape-checked on the wire (usage.wire.shaped_events) skip the per-field checks."""
    if not isinstance(events, Sequence) or isinstance(events, str | bytes) or not 1 <= len(events) <= MAX_BATCH:
        raise IngestValidationError([FieldError(None, "events", f"must be a list of 1 to {MAX_BATCH} events")])
    clean, errors = (list(events), []) if isinstance(events, ShapedEvents) else _validate_shapes(events)
    rows = _rate_events(clean, _look_up_references(clean), errors)
    if errors:
        raise IngestValidationError(errors)
    stored = _store_new(rows)
    charges: dict[int, Decimal] = defaultdict(Decimal)
    for row in stored:
        charges[row.organization_id] += row.cost
    # Replays (already stored) and repeats within this batch both count as duplicates.
    return IngestResult(
        accepted=len(stored),
        duplicates=len(events) - len(stored),
        inserted_ids=tuple(row.pk for row in stored),
        charges=dict(charges),
    )


@dataclass(frozen=True)
class _References:
    """What a batch's events name, looked up once for the whole batch."""

    keys: dict[uuid.UUID, _KeyFacts]
    models_by_code: dict[str, Model]
    currencies: dict[int, str]  # the billing account's currency, by organization id
    price_books: dict[str, PriceBook]  # by currency


@dataclass(frozen=True, slots=True)
class _Resolved:
    """What one event turned out to name, and the price it is rated at."""

    key: _KeyFacts
    model: Model
    currency: str
    price: Price


def _look_up_references(clean: Sequence[dict[str, Any]]) -> _References:
    key_uuids = {event["key_uuid"] for event in clean if "key_uuid" in event}
    # Plain tuples, not model instances: a batch names up to a thousand keys, and building their
    # models (and decoding each department's JSON fields) cost more than the insert.
    keys = {
        key[0]: _KeyFacts(*key[1:])
        for key in InferenceKey.objects.filter(uuid__in=key_uuids).values_list(
            "uuid", "pk", "organization_id", "department_id", "owner_id", "department__discount")
    }
    model_codes = {event["model"] for event in clean if isinstance(event.get("model"), str)}
    models_by_code = {model.code: model for model in Model.objects.filter(code__in=model_codes)}
    organization_ids = {key.organization_id for key in keys.values()}
    currencies = dict(
        BillingAccount.objects.filter(organization_id__in=organization_ids).values_list(
            "organization_id", "currency"
        )
    )
    price_books = {
        currency: PriceBook((model.pk for model in models_by_code.values()), currency)
        for currency in set(currencies.values())
    }
    return _References(keys, models_by_code, currencies, price_books)


def _resolve(index: int, event: dict[str, Any], references: _References,
             errors: list[FieldError]) -> _Resolved | None:
    """The key, model, currency and price one event names; None, with the reasons added to
    `errors`, when any of them is missing."""
    key = references.keys.get(event.get("key_uuid"))
    model = references.models_by_code.get(event.get("model"))
    if "key_uuid" in event and key is None:
        errors.append(FieldError(index, "key_id", "unknown inference key"))
    if isinstance(event.get("model"), str) and model is None:
        errors.append(FieldError(index, "model", "unknown model code"))
    if key is None or model is None or event.get("timestamp") is None:
        return None
    currency = references.currencies.get(key.organization_id)
    if currency is None:
        errors.append(FieldError(index, "key_id", "the key's organization has no billing account"))
        return None
    price = references.price_books[currency].at(model.pk, event["timestamp"])
    if price is None:
        errors.append(FieldError(index, "model", f"no {currency} price for {model.code} at that time"))
        return None
    return _Resolved(key, model, currency, price)


def _rate_events(clean: Sequence[dict[str, Any]], references: _References,
                 errors: list[FieldError]) -> list[RatedEvent]:
    """Each event resolved and rated, once per request_id; every problem found is added to
    `errors`, and once there is one the batch is rejected anyway, so rating stops."""
    received_at = timezone.now()
    rates: dict[tuple[int, Decimal], Rates] = {}  # a batch uses a handful of (price, discount) pairs
    rows: list[RatedEvent] = []
    seen_request_ids: set[str] = set()
    for index, event in enumerate(clean):
        resolved = _resolve(index, event, references, errors)
        if resolved is None or errors or event["request_id"] in seen_request_ids:
            continue
        seen_request_ids.add(event["request_id"])
        rows.append(_rated(event, resolved, rates, received_at))
    return rows


def _rated(event: dict[str, Any], resolved: _Resolved, rates: dict[tuple[int, Decimal], Rates],
           received_at: datetime) -> RatedEvent:
    key, price = resolved.key, resolved.price
    price_rates = rates.get((price.pk, key.discount))
    if price_rates is None:
        price_rates = rates[(price.pk, key.discount)] = Rates(price, key.discount)
    cost = price_rates.cost(
        prompt_tokens=event["prompt_tokens"],
        cached_tokens=event["cached_tokens"],
        cache_creation_tokens=event["cache_creation_tokens"],
        completion_tokens=event["completion_tokens"],
        image_count=event["image_count"],
        video_seconds=event["video_seconds"],
    )
    return RatedEvent(
        # Who sent it, resolved from its key; what it cost; and its own fields as validated.
        organization_id=key.organization_id, department_id=key.department_id, key_id=key.pk,
        member_id=key.owner_id, model_id=resolved.model.pk, price_id=price.pk,
        cost=cost.total, input_cost=cost.input, cache_read_cost=cost.cache_read, cache_write_cost=cost.cache_write,
        output_cost=cost.output,
        currency=resolved.currency, received_at=received_at,
        **{name: event[name] for name in _STORED_AS_VALIDATED},
    )


def _store_new(rows: list[RatedEvent]) -> list[RatedEvent]:
    """Store the rows whose request_id is new and queue exactly those for folding into the
    rollups (usage/folding.py); return them, with their ids set."""
    with transaction.atomic():
        # No rollup row is touched here: concurrent batches would all wait on the same hot rows
        # (each organization's current hour and day) until each commits. Idempotency stays here.
        if connection.vendor == "postgresql":
            inserted, queued = store_and_queue(rows)
        else:
            inserted = _insert_new(rows)
            queued = folding.queue(inserted)
        folding.after_ingest(queued, {row.organization_id for row in inserted})
        return inserted


_INSERT_FIELDS = [field for field in UsageEvent._meta.concrete_fields if not field.primary_key]
_INSERT_COLUMNS = [field.column for field in _INSERT_FIELDS]


def _insert_new(rows: list[RatedEvent]) -> list[RatedEvent]:
    """SQLite ingestion (PostgreSQL stores and queues in one statement: store_and_queue): insert
    the rows whose request_id is new, in one statement; return exactly those rows, with their
    ids set (from RETURNING, so a replay inserts and reports nothing)."""
    if not rows:
        return []
    values = [[field.get_db_prep_save(getattr(row, field.attname), connection) for field in _INSERT_FIELDS]
              for row in rows]
    returned = write_rows(UsageEvent._meta.db_table, _INSERT_COLUMNS, column_types(UsageEvent, _INSERT_COLUMNS),
                          values, conflict="(request_id) DO NOTHING", returning="id, request_id")
    return stored_rows(rows, returned)


# --- re-rating and rebuilding --------------------------------------------------------------

REBUILD_CHUNK = 5000


@dataclass
class RerateReport:
    events_checked: int = 0
    events_changed: int = 0
    cost_before: Decimal = Decimal(0)
    cost_after: Decimal = Decimal(0)
    changed_by_model: dict[str, tuple[int, Decimal, Decimal]] | None = None  # code -> (events, before, after)


def _events_in(organization_id: int, start: datetime, end: datetime):
    return UsageEvent.objects.filter(organization_id=organization_id, timestamp__gte=start, timestamp__lt=end)


def _whole_local_days(organization: Organization, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    # The per-day level is in local days, so a partial rebuild must cover whole local days.
    zone = organization.zone
    first = local_midnight(start, zone)
    last_day = (end - timedelta(microseconds=1)).astimezone(zone).date()
    return first, local_midnight_of(last_day + timedelta(days=1), zone)


@transaction.atomic
def rebuild_rollups(*, organization: Organization, start: datetime | None = None, end: datetime | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Recompute every rollup level of `organization` from its raw events (whole local days
    around [start, end); everything when no range is given). Returns the events folded."""
    # Its queued batches first (waiting for a folder that holds some): refolding from raw events
    # counts them, and their queue rows must not count them again afterwards.
    folding.fold_pending(organization_ids=[organization.pk], wait=True)
    events = UsageEvent.objects.filter(organization=organization)
    if start is not None and end is not None:
        start, end = _whole_local_days(organization, start, end)
        events = events.filter(timestamp__gte=start, timestamp__lt=end)
        for level in LEVELS:
            first, last = level.time.bounds(start, end, organization.zone)
            column = level.time.column
            level.model.objects.filter(organization=organization, **{f"{column}__gte": first,
                                                                     f"{column}__lt": last}).delete()
        # Recounted for the days that still have events by the folds below.
        first, last = KEY_DAILY.time.bounds(start, end, organization.zone)
        UsageKeyDailyRows.objects.filter(organization=organization, day__gte=first, day__lt=last).delete()
        UsageHourGroups.objects.filter(organization=organization, hour__gte=epoch(start), hour__lt=epoch(end)).delete()
    else:
        # Conversations and peaks depend on no price, so a partial rebuild (a re-rate) keeps them.
        for model in (*(level.model for level in LEVELS), UsageKeyDailyRows, UsageHourGroups, *activity.MODELS):
            model.objects.filter(organization=organization).delete()
        UsageFillState.objects.filter(organization=organization).delete()
    zones = organization_zones([organization.pk])
    folded = 0
    after_id = 0
    while True:
        chunk = list(events.filter(id__gt=after_id).order_by("id")[:REBUILD_CHUNK])
        if not chunk:
            break
        fold_events(chunk, zones, freshness=start is None)
        folded += len(chunk)
        after_id = chunk[-1].pk
        if progress:
            progress(len(chunk))
    logger.info("rebuild_rollups: org %s, %d events folded (%s to %s)", organization.pk, folded, start, end)
    return folded


@transaction.atomic
def rerate_events(*, actor: Actor, organization: Organization, start: datetime, end: datetime) -> RerateReport:
    """Re-rate [start, end) at the prices now recorded for those instants (after a price
    correction) and the departments' current discounts; rebuild the rollups it touched."""
    currency = BillingAccount.objects.values_list("currency", flat=True).get(organization=organization)
    report = RerateReport(changed_by_model={})
    events = _events_in(organization.pk, start, end).select_related("department", "model")
    model_ids = set(events.values_list("model_id", flat=True).distinct())
    book = PriceBook(model_ids, currency)
    after_id = 0
    while True:
        chunk = list(events.filter(id__gt=after_id).order_by("id")[:REBUILD_CHUNK])
        if not chunk:
            break
        changed = []
        for event in chunk:
            price = book.at(event.model_id, event.timestamp)
            report.events_checked += 1
            report.cost_before += event.cost
            if price is None:  # no price any more: keep what was charged rather than invent one
                report.cost_after += event.cost
                continue
            cost = rate(price, discount=event.department.discount, prompt_tokens=event.prompt_tokens,
                        cached_tokens=event.cached_tokens, cache_creation_tokens=event.cache_creation_tokens,
                        completion_tokens=event.completion_tokens,
                        image_count=event.image_count, video_seconds=event.video_seconds)
            report.cost_after += cost.total
            if cost.total != event.cost or price.pk != event.price_id:
                count, before, after = report.changed_by_model.get(event.model.code, (0, Decimal(0), Decimal(0)))
                report.changed_by_model[event.model.code] = (count + 1, before + event.cost, after + cost.total)
                event.cost, event.price_id = cost.total, price.pk
                event.input_cost, event.cache_read_cost, event.output_cost = cost.input, cost.cache_read, cost.output
                event.cache_write_cost = cost.cache_write
                changed.append(event)
        UsageEvent.objects.bulk_update(changed, ["cost", "price", "input_cost", "cache_read_cost", "cache_write_cost",
                                                 "output_cost"], batch_size=1000)
        report.events_changed += len(changed)
        after_id = chunk[-1].pk
    if report.events_changed:
        rebuild_rollups(organization=organization, start=start, end=end)
    record_audit(actor=actor, organization=organization, action="usage.rerate", target=organization, detail={
        "start": start.isoformat(), "end": end.isoformat(), "events_checked": report.events_checked,
        "events_changed": report.events_changed, "cost_before": str(report.cost_before),
        "cost_after": str(report.cost_after)})
    return report
