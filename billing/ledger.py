"""The usage ledger of one organization: every usage event as a charge and every credit grant
in the account's currency as a credit, merged in time order (Venice's `billing/usage`).

One walk serves both a page and the whole stream: events are read by keyset (`usage.selectors`)
and credits, which are few, are merged in as the walk passes their instant. Credits sort before
events of the same instant (money arrives before it is spent)."""

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice

from billing.models import CreditGrant, Model
from billing.selectors import account_currency
from keys.models import InferenceKey
from portal.models import Organization
from usage.models import UsageEvent
from usage.selectors import events_in, export_events

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
END_OF_TIME = datetime(9999, 1, 1, tzinfo=UTC)
WALK_PAGE = 2000

LedgerItem = UsageEvent | CreditGrant


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
        self.credits = list(CreditGrant.objects.filter(
            organization=organization, created_at__gte=self.start, created_at__lt=self.end, currency=self.currency,
        ).order_by(*(("-created_at", "-id") if descending else ("created_at", "id"))))

    def total(self) -> int:
        return 0 if self.empty else self.events.count() + len(self.credits)

    def page(self, offset: int, limit: int) -> list[LedgerItem]:
        """Entries [offset, offset + limit): the walk started at the event the page begins with."""
        if self.empty:
            return []
        # A credit's place is its index plus the events before it.
        slots = [index + self._events_before(credit) for index, credit in enumerate(self.credits)]
        credits_before = sum(1 for slot in slots if slot < offset)
        first_event = offset - credits_before
        after = None
        if first_event > 0:
            # The keyset of the event before the page: an index-only read of two columns.
            after = self.events.values_list("timestamp", "id")[first_event - 1 : first_event].first()
            if after is None:  # every event comes before the page: only credits are left
                return list(self.credits[credits_before : credits_before + limit])
        return list(islice(self._walk(after, self.credits[credits_before:]), limit))

    def stream(self) -> Iterator[LedgerItem]:
        """Every entry, in order, never all in memory."""
        if not self.empty:
            yield from self._walk(None, self.credits)

    def _events_before(self, credit: CreditGrant) -> int:
        if self.descending:
            return self.events.filter(timestamp__gt=credit.created_at).count()
        return self.events.filter(timestamp__lt=credit.created_at).count()

    def _credit_first(self, credit: CreditGrant, event: UsageEvent) -> bool:
        if self.descending:
            return credit.created_at >= event.timestamp
        return credit.created_at <= event.timestamp

    def _walk(self, after: tuple[datetime, int] | None, credits: list[CreditGrant]) -> Iterator[LedgerItem]:
        models = {model.pk: model for model in Model.objects.all()}
        keys: dict[int, InferenceKey] = {}
        pending = iter(credits)
        credit = next(pending, None)
        while True:
            page = export_events(self.organization.pk, self.start, self.end, limit=WALK_PAGE, after=after,
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
