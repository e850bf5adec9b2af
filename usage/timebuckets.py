"""Time buckets in any IANA zone: fixed widths aligned to a local midnight, and calendar hours,
days, weeks and months that are right across DST changes (23- and 25-hour days) and in zones
with half- and quarter-hour offsets.

The SQL side needs only integer arithmetic on UTC epoch seconds, which every database does the
same way: a fixed-width bucket index is (epoch − origin) / width, and a local calendar day is
(epoch + offset) / 86400, where the offset is a CASE over the zone's transitions in the range.
"""

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

DAY = 86400
CALENDAR_UNITS = ("day", "week", "month")

# The instants any caller may name, in every dialect and in ingestion: [EARLIEST, LATEST). Python's
# datetime ends at year 9999 and timedelta at 999,999,999 days, and a local day near either end
# overflows in a zone ahead of or behind UTC; a bound well inside both keeps every bucket, offset
# walk and span computation representable, and no usage event predates the Unix epoch.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
EARLIEST_EPOCH, LATEST_EPOCH = int(EARLIEST.timestamp()), int(LATEST.timestamp())
SUPPORTED_RANGE = "from 1970-01-01T00:00:00Z (inclusive) to 2200-01-01T00:00:00Z (exclusive)"


class OutOfRange(ValueError):
    """An instant, a day or a span the platform cannot represent: a caller's error, never a 500."""


def checked_instant(moment: datetime) -> datetime:
    """`moment` (aware) if it lies in [EARLIEST, LATEST); else OutOfRange saying so."""
    try:
        inside = EARLIEST <= moment < LATEST
    except (OverflowError, TypeError) as error:  # an offset that pushes it past year 1 or 9999
        raise OutOfRange(f"must be {SUPPORTED_RANGE}") from error
    if not inside:
        raise OutOfRange(f"must be {SUPPORTED_RANGE}")
    return moment


def instant_from_epoch(seconds: int) -> datetime:
    """Unix seconds as an aware UTC datetime, for any int (2**63, -1, ...): OutOfRange outside the range."""
    if not EARLIEST_EPOCH <= seconds < LATEST_EPOCH:
        raise OutOfRange(f"must be Unix seconds {SUPPORTED_RANGE} ({EARLIEST_EPOCH} to {LATEST_EPOCH - 1})")
    return datetime.fromtimestamp(seconds, tz=UTC)


def checked_day(day: date) -> date:
    """A calendar day whose local midnight exists in every zone: OutOfRange outside the range."""
    if not EARLIEST.date() <= day < LATEST.date():
        raise OutOfRange(f"must be a day {SUPPORTED_RANGE}")
    return day


@dataclass(frozen=True)
class Granularity:
    """Either a fixed width in seconds, or a calendar unit ("hour", "day", "week", "month")."""

    seconds: int | None = None
    unit: str | None = None

    @classmethod
    def of(cls, value: "Granularity | str | int | None") -> "Granularity | None":
        if value is None or isinstance(value, Granularity):
            return value
        if isinstance(value, int):
            # A whole number of days means calendar days in the zone (Weave's rule).
            return cls(unit="day", seconds=value) if value % DAY == 0 else cls(seconds=value)
        if value == "hour":
            return cls(seconds=3600)
        if value in CALENDAR_UNITS:
            return cls(unit=value)
        raise ValueError(f"unknown granularity {value!r}")

    @property
    def days(self) -> int:
        """For calendar days: how many days one bucket spans (Weave allows 2-day buckets, ...)."""
        return (self.seconds // DAY) if self.unit == "day" and self.seconds else 1


@dataclass(frozen=True)
class Bucket:
    key: int | date  # bucket index (fixed width) or the bucket's first local day (calendar)
    start: datetime  # aware, in the query's zone
    end: datetime


def epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def local_midnight(moment: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    local = moment.astimezone(zone)
    return local_midnight_of(local.date(), zone)


def local_midnight_of(day: date, zone: zoneinfo.ZoneInfo) -> datetime:
    # Round-trip through UTC so that a midnight skipped by DST resolves to the real instant.
    naive = datetime(day.year, day.month, day.day)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)


def offset_transitions(zone: zoneinfo.ZoneInfo, start: datetime, end: datetime) -> list[tuple[int, int]]:
    """[(utc_epoch_from, offset_seconds)] covering [start, end): the zone's UTC offset and each
    instant it changes. Found by stepping hourly and bisecting to the second."""
    def offset_at(instant: int) -> int:
        return int(datetime.fromtimestamp(instant, tz=UTC).astimezone(zone).utcoffset().total_seconds())

    first, last = epoch(start) - DAY, epoch(end) + DAY
    spans = [(first, offset_at(first))]
    probe = first
    while probe < last:
        following = min(probe + 3600, last)
        if offset_at(following) != spans[-1][1]:
            low, high = probe, following
            while high - low > 1:
                middle = (low + high) // 2
                if offset_at(middle) == spans[-1][1]:
                    low = middle
                else:
                    high = middle
            spans.append((high, offset_at(high)))
        probe = following
    return spans


def buckets(start: datetime, end: datetime, zone: zoneinfo.ZoneInfo, granularity: Granularity | None) -> list[Bucket]:
    """Every bucket that [start, end) touches, in order."""
    if granularity is None:
        return [Bucket(0, start.astimezone(zone), end.astimezone(zone))]
    if granularity.unit is None:
        width = granularity.seconds
        origin = epoch(local_midnight(start, zone))
        first = (epoch(start) - origin) // width
        last = (epoch(end) - 1 - origin) // width
        edges = [datetime.fromtimestamp(origin + index * width, tz=zone) for index in range(first, last + 2)]
        return [Bucket(index, edges[n], edges[n + 1]) for n, index in enumerate(range(first, last + 1))]
    result = []
    day = bucket_day(start.astimezone(zone).date(), start, zone, granularity)
    final = (end - timedelta(microseconds=1)).astimezone(zone).date()
    while day <= final:
        following = next_bucket_day(day, granularity)
        result.append(Bucket(day, local_midnight_of(day, zone), local_midnight_of(following, zone)))
        day = following
    return result


def bucket_day(day: date, start: datetime, zone: zoneinfo.ZoneInfo, granularity: Granularity) -> date:
    """The first local day of the calendar bucket that contains `day`."""
    if granularity.unit == "week":
        return day - timedelta(days=day.weekday())
    if granularity.unit == "month":
        return day.replace(day=1)
    span = granularity.days
    if span == 1:
        return day
    anchor = start.astimezone(zone).date()
    return anchor + timedelta(days=((day - anchor).days // span) * span)


def next_bucket_day(day: date, granularity: Granularity) -> date:
    if granularity.unit == "week":
        return day + timedelta(days=7)
    if granularity.unit == "month":
        return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return day + timedelta(days=granularity.days)


def day_from_number(number: int) -> date:
    """Local day number (days since 1970-01-01 on the local calendar) to a date."""
    return date(1970, 1, 1) + timedelta(days=number)


def last_days(zone: zoneinfo.ZoneInfo, days: int, now: datetime) -> tuple[datetime, datetime]:
    """"The last N days": N calendar days in `zone` ending today, today included."""
    today = now.astimezone(zone).date()
    return local_midnight_of(today - timedelta(days=days - 1), zone), local_midnight_of(today + timedelta(days=1), zone)
