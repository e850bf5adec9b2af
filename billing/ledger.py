"""The ledger (API.md §10): every money movement is an append-only entry, and the balance is
their sum. Usage charges are the usage events themselves (each event's cost, negative), so
ingestion writes no second row per event; every other movement is a `LedgerEntry`.

Writes keep each account's running balance in the same transaction as the movement
(`append_entry`, `charge_usage`); `billing.reconciliation` proves it equal to the sum nightly.
Reads: `UsageLedger` walks one organization's entries and charges in time order (Venice's
`billing/usage`): events by keyset (`usage.selectors`), entries, which are few, merged in as the
walk passes their instant; entries sort before events of the same instant (money arrives before
it is spent). Venice pages it by number (`page`): the page's first event is found on the hourly
rollup's counts (`usage.selectors.EventTimeline`), never by OFFSET; the portal's ledger by
keyset (`after`)."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.models import BillingAccount, CreditGrant, Invoice, LedgerEntry, Model
from billing.money import ZERO
from billing.selectors import account_currency
from keys.models import InferenceKey
from portal.models import Organization
from usage.models import UsageEvent
from usage.selectors import EventTimeline, events_in, export_events

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
WALK_PAGE = 2000

LedgerItem = UsageEvent | LedgerEntry
# Above every event id: a keyset bound that lets a descending walk include the events of an instant.
LAST_ID = 2**63 - 1


@dataclass(frozen=True)
class LedgerPosition:
    """Where a keyset page of the walk ended: the last item's instant and id, and whether it was
    an entry (a `LedgerEntry`) or an event."""

    at: datetime
    id: int
    entry: bool

    @classmethod
    def of(cls, item: LedgerItem) -> "LedgerPosition":
        if isinstance(item, LedgerEntry):
            return cls(item.created_at, item.pk, True)
        return cls(item.timestamp, item.pk, False)


class UsageLedger:
    def __init__(self, organization: Organization, *, start: datetime | None = None, end: datetime | None = None,
                 currency: str | None = None, descending: bool = False) -> None:
        self.organization = organization
        self.start, self.end = start or EPOCH, end or END_OF_TIME
        self.descending = descending
        self.currency = account_currency(organization)
        # Asking for another currency than the account's finds nothing (nothing is kept in it).
        self.empty = currency is not None and currency != self.currency
        self.events = events_in(organization.pk, self.start, self.end, descending=descending)
        self._timeline: EventTimeline | None = None
        self.credits = list(LedgerEntry.objects.filter(
            organization=organization, created_at__gte=self.start, created_at__lt=self.end, currency=self.currency,
        ).order_by(*(("-created_at", "-id") if descending else ("created_at", "id"))))

    @property
    def timeline(self) -> EventTimeline:
        """The events' counts per hour (from the hourly rollup): totals and page positions."""
        if self._timeline is None:
            self._timeline = EventTimeline(self.organization.pk, self.start, self.end)
        return self._timeline

    def total(self) -> int:
        return 0 if self.empty else self.timeline.total + len(self.credits)

    def page(self, offset: int, limit: int) -> list[LedgerItem]:
        """Entries [offset, offset + limit): the walk started at the event the page begins with,
        found on the hourly counts (a page number costs what a keyset page costs)."""
        if self.empty:
            return []
        # A credit's place is its index plus the events before it.
        slots = [index + self._events_before(credit) for index, credit in enumerate(self.credits)]
        credits_before = sum(1 for slot in slots if slot < offset)
        first_event = offset - credits_before
        after = None
        if first_event > 0:
            # The keyset of the event before the page.
            timeline = self.timeline
            last_before = first_event - 1
            after = timeline.position(timeline.total - 1 - last_before if self.descending else last_before)
            if after is None:  # every event comes before the page: only credits are left
                return list(self.credits[credits_before : credits_before + limit])
        return list(islice(self._walk(after, self.credits[credits_before:], batch=limit), limit))

    def after(self, position: LedgerPosition | None, limit: int) -> tuple[list[LedgerItem], LedgerPosition | None]:
        """A keyset page: up to `limit` items strictly after `position` (from the start when
        None), and the position to continue from (None at the end). No count and no OFFSET, so
        a page deep in the walk costs what the first one costs."""
        if self.empty:
            return [], None
        credits, events_after = self.credits, None
        if position is not None:
            credits = [credit for credit in self.credits if self._credit_after(credit, position)]
            if position.entry:
                # Entries sort before the events of their instant: those events are still to come.
                events_after = (position.at, LAST_ID if self.descending else 0)
            else:
                events_after = (position.at, position.id)
        items = list(islice(self._walk(events_after, credits, batch=min(WALK_PAGE, limit + 1)), limit + 1))
        more = len(items) > limit
        return items[:limit], LedgerPosition.of(items[limit - 1]) if more else None

    def _credit_after(self, credit: LedgerEntry, position: LedgerPosition) -> bool:
        # Past an event, the entries of its instant were walked before it; past an entry, the
        # entries of its instant that sort after it are still to come.
        mine, theirs = (credit.created_at, credit.pk), (position.at, position.id)
        if self.descending:
            return mine < theirs if position.entry else credit.created_at < position.at
        return mine > theirs if position.entry else credit.created_at > position.at

    def stream(self) -> Iterator[LedgerItem]:
        """Every entry, in order, never all in memory."""
        if not self.empty:
            yield from self._walk(None, self.credits)

    def _events_before(self, credit: LedgerEntry) -> int:
        if self.descending:
            return self.timeline.after(credit.created_at)
        return self.timeline.before(credit.created_at)

    def _credit_first(self, credit: LedgerEntry, event: UsageEvent) -> bool:
        if self.descending:
            return credit.created_at >= event.timestamp
        return credit.created_at <= event.timestamp

    def _walk(self, after: tuple[datetime, int] | None, credits: list[LedgerEntry], *,
              batch: int = WALK_PAGE) -> Iterator[LedgerItem]:
        models = {model.pk: model for model in Model.objects.all()}
        keys: dict[int, InferenceKey] = {}
        pending = iter(credits)
        credit = next(pending, None)
        while True:
            page = export_events(self.organization.pk, self.start, self.end, limit=batch, after=after,
                                 descending=self.descending)
            missing = {event.key_id for event in page.events} - set(keys)
            keys.update({key.pk: key for key in InferenceKey.objects.filter(pk__in=missing)})
            for event in page.events:
                event.model, event.key = models[event.model_id], keys[event.key_id]
                while credit is not None and self._credit_first(credit, event):
                    yield credit
                    credit = next(pending, None)
                yield event
            if page.next_after is None:
                break
            after = page.next_after
        while credit is not None:
            yield credit
            credit = next(pending, None)


# --- writes ------------------------------------------------------------------------------------

def append_entry(*, organization, kind: str, amount: Decimal, at: datetime | None = None, note: str = "",
                 grant: CreditGrant | None = None, invoice: Invoice | None = None, credit_note=None) -> LedgerEntry:
    """One money movement and the account's running balance, inside the caller's transaction."""
    account = BillingAccount.objects.only("pk", "currency").get(organization=organization)
    entry = LedgerEntry.objects.create(organization=organization, kind=kind, amount=amount, currency=account.currency,
                                       grant=grant, invoice=invoice, credit_note=credit_note, note=note,
                                       created_at=at or timezone.now())
    _add_to_balance(organization.pk, amount)
    return entry


def _add_to_balance(organization_id: int, amount: Decimal) -> None:
    """Add to the running balance exactly. PostgreSQL adds NUMERICs in place (and the row lock
    serializes writers); SQLite would add them as binary floats, so there the sum is made in
    Python (SQLite writers are serialized by its database lock anyway)."""
    accounts = BillingAccount.objects.filter(organization_id=organization_id)
    if connection.vendor == "postgresql":
        accounts.update(balance=F("balance") + amount)
        return
    balance = accounts.values_list("balance", flat=True).get()
    accounts.update(balance=balance + amount)


def charge_usage(charges: Mapping[int, Decimal], *, now: datetime | None = None) -> None:
    """The usage charges of one ingested batch, inside its transaction: per organization, the sum
    of its new events' costs lowers the running balance and draws its grants down.

    A batch names most organizations (50 in the benchmark's mix), so this is set-based: one
    statement locks the accounts, one moves their balances, one reads (and locks) every drawable
    grant of those organizations, and only the grants actually drawn are written. One statement
    per organization took 142 ms of a 1,000-event batch (bench/ingest_http.py), while holding the
    rollups' hot rows. Accounts, then grants, are locked in organization order, so two batches
    never wait on each other in a cycle."""
    now = now or timezone.now()
    amounts = {organization_id: charges[organization_id] for organization_id in sorted(charges)
               if charges[organization_id]}
    if not amounts:
        return
    if connection.vendor == "postgresql":
        locked = list(BillingAccount.objects.select_for_update().filter(organization_id__in=amounts)
                      .order_by("organization_id").values_list("pk", flat=True))
        if locked:
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE billing_billingaccount AS account SET balance = account.balance - charge.amount "
                    "FROM unnest(%s::bigint[], %s::numeric[]) AS charge(organization_id, amount) "
                    "WHERE account.organization_id = charge.organization_id",
                    [list(amounts), list(amounts.values())])
    else:
        for organization_id, amount in amounts.items():
            _add_to_balance(organization_id, -amount)
    _draw_grants_of(amounts, now)


def _draw_grants_of(amounts: Mapping[int, Decimal], now: datetime) -> None:
    """draw_grants for several organizations at once (in organization order)."""
    grants = (_drawable(now).filter(organization_id__in=list(amounts))
              .order_by("organization_id", *DRAW_ORDER).select_for_update()
              .values_list("pk", "organization_id", "remaining"))
    left = dict(amounts)
    for pk, organization_id, remaining in grants:
        if left[organization_id] <= ZERO:
            continue
        drawn = min(remaining, left[organization_id])
        left[organization_id] -= drawn
        _set_remaining(pk, remaining - drawn)


def _set_remaining(pk: int, remaining: Decimal) -> None:
    CreditGrant.objects.filter(pk=pk).update(
        remaining=remaining, status=CreditGrant.Status.USED if remaining == ZERO else CreditGrant.Status.ACTIVE)


# The order charges draw grants in: lowest priority number, then earliest expiry (never-expiring
# last), then oldest.
DRAW_ORDER = ("priority", F("expires_at").asc(nulls_last=True), "created_at", "id")


def _drawable(now: datetime):
    return (CreditGrant.objects.filter(status=CreditGrant.Status.ACTIVE, remaining__gt=0)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now)))


def drawable_grants(organization_id: int, now: datetime):
    """Unexpired grants with credit left, in the order charges draw them (DRAW_ORDER)."""
    return _drawable(now).filter(organization_id=organization_id).order_by(*DRAW_ORDER)


def draw_grants(organization_id: int, amount: Decimal, *, now: datetime) -> Decimal:
    """Draw `amount` from the organization's grants in order; what they cannot cover is left to
    the cash balance and the credit limit. Returns the part the grants covered."""
    left = amount
    for grant in drawable_grants(organization_id, now).select_for_update():
        if left <= ZERO:
            break
        drawn = min(grant.remaining, left)
        left -= drawn
        _set_remaining(grant.pk, grant.remaining - drawn)
    return amount - left


def expire_grants(*, now: datetime | None = None) -> int:
    """Grants past their expiry: the unused remainder leaves through a `grant_expiry` entry and the
    grant shows expired with nothing remaining. A rerun finds nothing more to do."""
    now = now or timezone.now()
    expired = 0
    due = CreditGrant.objects.filter(status=CreditGrant.Status.ACTIVE, expires_at__lte=now).values_list("pk", flat=True)
    for pk in due:
        with transaction.atomic():
            grant = CreditGrant.objects.select_for_update().select_related("organization").get(pk=pk)
            if grant.status != CreditGrant.Status.ACTIVE:
                continue  # another job got there first
            if grant.remaining > ZERO:
                append_entry(organization=grant.organization, kind=LedgerEntry.Kind.GRANT_EXPIRY,
                             amount=-grant.remaining, at=grant.expires_at, grant=grant,
                             note=f"Expired {grant.get_kind_display().lower()}: unused remainder")
            CreditGrant.objects.filter(pk=pk).update(remaining=ZERO, status=CreditGrant.Status.EXPIRED)
            expired += 1
    return expired
