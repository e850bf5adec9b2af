"""The durable queue of unfolded batches: when stored events are folded into the rollups.

The ingest transaction stores the raw events (with what must hold at its commit: idempotency on
request_id, the ledger's charges, the hard limits) and one `UsageFoldQueue` row per organization
of the batch naming the events it stored. A folder then, in ONE transaction, claims queued rows
(`SELECT ... FOR UPDATE SKIP LOCKED`), folds their events into every rollup level, the fill
state, the conversations and the peaks (usage/rollups.py, usage/activity.py), and deletes the
rows. So:

* a crash between the ingest commit and the fold loses nothing: the row is still queued;
* a crash or rollback inside a fold undoes the fold and the delete together: the row is queued
  again, its events counted nowhere;
* nothing is folded twice: a row is folded by the transaction that deletes it, and a second
  folder either skips it (locked) or no longer sees it (deleted).

Who folds:

* `fold_pending()`: one transaction of the background folder. Only one runs at a time (a
  transaction-scoped advisory lock; a second returns at once): the writers no longer touch the
  hot rollup rows at all, and one folder taking many batches at once takes each hot row once
  for all of them.
* the Celery task `usage.tasks.fold_usage`, enqueued on commit of every ingest transaction, and
  every few seconds by beat as a sweep (a lost enqueue, a worker killed mid-fold);
  `manage.py fold_usage` does the same by hand.
* `fold_pending(organization_ids=..., wait=True)`: reads that must count every committed event
  (the hard limits, billing.budgets) fold the organizations' queue first, in their own
  transaction, waiting for a folder that holds some of those rows to commit.
* `USAGE_FOLD_IN_TRANSACTION` (no broker: the demo, the tests): the ingest transaction folds the
  rows it just queued itself, so a read right after ingesting is fresh even inside a transaction
  that never commits.
* backpressure: after its commit, a writer whose organizations' oldest queued batch is older than
  `USAGE_FOLD_LAG_LIMIT` seconds folds those organizations itself (`fold_pending(organization_ids=
  ..., wait=True)`, the hard limits' path) before it answers. Without it the queue only grows
  while writers outrun the one background folder: 4 HTTP writers on 2 cores queued 96,000
  events, 15 s behind, in 30 s (bench/RESULTS.md). With it a writer's answer waits for its fold,
  so writers go no faster than their events are folded and the rollups lag by about the limit.
"""

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import partial
from itertools import chain
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Min
from django.utils import timezone

from usage.models import UsageEvent, UsageFoldQueue
from usage.rollups import fold_events, fold_stored, organization_zones

__all__ = ["after_ingest", "fold_pending", "fold_until_empty", "keep_up", "oldest_queued", "queue"]

logger = logging.getLogger(__name__)

# pg_try_advisory_xact_lock's key for the background folder ("usag" in ASCII).
FOLDER_LOCK = 0x75736167
# What one fold transaction takes at most: enough batches to amortize the hot rows, few enough
# that its locks and its work stay short.
CLAIM_ROWS = 2000
MAX_EVENTS_PER_FOLD = 20_000
_SQLITE_CHUNK = 5000  # ids per IN list (SQLite's bound on variables)


def queue(stored: Sequence[Any]) -> list[int]:
    """Queue the newly stored events of a batch, one row per organization (SQLite ingestion;
    PostgreSQL queues in the statement that stores them). Returns the rows' ids."""
    by_organization: dict[int, list[int]] = defaultdict(list)
    for event in stored:
        by_organization[event.organization_id].append(event.pk)
    now = timezone.now()
    rows = UsageFoldQueue.objects.bulk_create([
        UsageFoldQueue(organization_id=organization_id, event_ids=sorted(ids), events=len(ids), queued_at=now)
        for organization_id, ids in sorted(by_organization.items())])
    return [row.pk for row in rows]


def after_ingest(queued: Sequence[int], organization_ids: Iterable[int]) -> None:
    """What the ingest transaction does with the rows it queued (for `organization_ids`): fold
    them itself (USAGE_FOLD_IN_TRANSACTION), or have the folder fold them once it commits, and
    then fold them itself if its organizations' rollups lag too far (backpressure)."""
    if not queued:
        return
    if settings.USAGE_FOLD_IN_TRANSACTION:
        # Its own rows, uncommitted: no other transaction can see them, let alone claim them.
        _fold(list(UsageFoldQueue.objects.filter(pk__in=queued).values_list("pk", "event_ids", "events")))
    else:
        # robust: a broker that is down must not turn a committed batch into an error; the sweep
        # folds it.
        transaction.on_commit(_request_fold, robust=True)
        transaction.on_commit(partial(keep_up, sorted(set(organization_ids))), robust=True)


def keep_up(organization_ids: Sequence[int]) -> int:
    """Backpressure, after an ingest commit: fold these organizations' queue now if its oldest
    batch waited longer than USAGE_FOLD_LAG_LIMIT seconds. Returns the events folded here."""
    oldest = oldest_queued(organization_ids)
    if oldest is None or timezone.now() - oldest < timedelta(seconds=settings.USAGE_FOLD_LAG_LIMIT):
        return 0
    return fold_pending(organization_ids=organization_ids, wait=True) or 0


def _request_fold() -> None:
    from usage.tasks import fold_usage  # noqa: PLC0415 - tasks import this module (a cycle)

    fold_usage.delay()


def fold_pending(*, organization_ids: Iterable[int] | None = None, wait: bool = False) -> int | None:
    """Fold queued batches in one transaction: claim, fold into every level, dequeue. Returns the
    events folded; None when another background folder is folding (it will take these too).

    Without `organization_ids`: the background folder, the oldest rows first, up to
    MAX_EVENTS_PER_FOLD events, skipping rows another transaction holds. With them: every row of
    those organizations; with `wait`, rows another folder holds are waited for (it commits, and
    they are gone), so that on return every event of theirs committed before the call is
    counted by every level."""
    with transaction.atomic():
        if connection.vendor != "postgresql":
            _take_sqlite_write_lock()
        elif organization_ids is None and not _take_folder_lock():
            return None
        queued = UsageFoldQueue.objects.select_for_update(skip_locked=not wait).order_by("pk")
        if organization_ids is not None:
            queued = queued.filter(organization_id__in=sorted(set(organization_ids)))
            claimed = list(queued.values_list("pk", "event_ids", "events"))
        else:
            claimed = _within_budget(list(queued.values_list("pk", "event_ids", "events")[:CLAIM_ROWS]))
        return _fold(claimed)


def fold_until_empty(*, seconds: float | None = None) -> int:
    """Fold until the queue is empty (or `seconds` have passed, or another folder is at it: the
    one folding loops until empty itself). Returns the events folded."""
    deadline = None if seconds is None else time.monotonic() + seconds
    total = 0
    while True:
        folded = fold_pending()
        if not folded:
            return total
        total += folded
        if deadline is not None and time.monotonic() >= deadline:
            return total


def oldest_queued(organization_ids: Iterable[int] | None = None) -> datetime | None:
    """When the oldest batch still waiting to be folded was stored (of some organizations, or of
    any): what every level lags behind by, None when nothing is waiting."""
    queued = UsageFoldQueue.objects.all()
    if organization_ids is not None:
        queued = queued.filter(organization_id__in=organization_ids)
    return queued.aggregate(oldest=Min("queued_at"))["oldest"]


def _take_folder_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [FOLDER_LOCK])
        return cursor.fetchone()[0]


def _take_sqlite_write_lock() -> None:
    """SQLite lets one transaction write at a time, and one that read first cannot wait for the
    write lock (it fails at once: "database is locked"). Writing nothing first takes the lock,
    waiting for it as long as the connection's timeout allows: SQLite's folders take turns."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {connection.ops.quote_name(UsageFoldQueue._meta.db_table)} SET id = id WHERE 0 = 1")


def _within_budget(claimed: list[tuple[int, list[int], int]]) -> list[tuple[int, list[int], int]]:
    """The claimed rows, oldest first, up to MAX_EVENTS_PER_FOLD events (at least one row); the
    rest stay locked until this transaction ends and are folded by the next."""
    taken, events = [], 0
    for row in claimed:
        if taken and events + row[2] > MAX_EVENTS_PER_FOLD:
            break
        taken.append(row)
        events += row[2]
    return taken


def _fold(claimed: list[tuple[int, list[int], int]]) -> int:
    """Fold the claimed queue rows' events and delete the rows, in the caller's transaction."""
    if not claimed:
        return 0
    event_ids = sorted(chain.from_iterable(event_ids for _pk, event_ids, _events in claimed))
    if connection.vendor == "postgresql":
        folded = fold_stored(event_ids)
    else:
        folded = 0
        for start in range(0, len(event_ids), _SQLITE_CHUNK):
            events = list(UsageEvent.objects.filter(pk__in=event_ids[start:start + _SQLITE_CHUNK]).order_by("pk"))
            fold_events(events, organization_zones({event.organization_id for event in events}))
            folded += len(events)
    UsageFoldQueue.objects.filter(pk__in=[pk for pk, _event_ids, _events in claimed]).delete()
    if folded != len(event_ids):  # an event deleted under its queue row: say so, never invent it
        logger.warning("fold: %d of %d queued events no longer stored", len(event_ids) - folded, len(event_ids))
    return folded
