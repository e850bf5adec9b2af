"""Billing periods (API.md §10): a calendar month of the organization's clock, written as its
first and last day (both inclusive); the instants it covers are the local midnights around it,
so months with a 23- or 25-hour day are right. Budgets, the invoice job, reconciliation and
month-to-date cost all count months with this one class."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from usage.timebuckets import local_midnight_of


@dataclass(frozen=True, order=True)
class Period:
    """A calendar month of the organization's clock: its first and last day (both inclusive)."""

    start: date
    end: date

    @classmethod
    def of(cls, organization, moment: datetime) -> "Period":
        """The month of `organization`'s clock that contains the instant `moment`."""
        return cls.containing(moment.astimezone(organization.zone).date())

    @classmethod
    def containing(cls, day: date) -> "Period":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return cls(first, following - timedelta(days=1))

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def next(self) -> "Period":
        return Period.containing(self.end + timedelta(days=1))

    def previous(self) -> "Period":
        return Period.containing(self.start - timedelta(days=1))

    def bounds(self, zone) -> tuple[datetime, datetime]:
        """[start, end): the local midnights around the month (23- or 25-hour days included)."""
        return local_midnight_of(self.start, zone), local_midnight_of(self.end + timedelta(days=1), zone)
