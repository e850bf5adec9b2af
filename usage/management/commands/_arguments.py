"""Arguments shared by the usage commands."""

from datetime import datetime

from django.core.management.base import CommandError
from django.utils.dateparse import parse_date, parse_datetime

from portal.models import Organization
from usage.timebuckets import local_midnight_of


def organization_argument(value: str) -> Organization:
    found = Organization.objects.filter(slug=value).first() or (
        Organization.objects.filter(pk=int(value)).first() if value.isdigit() else None)
    if found is None:
        raise CommandError(f"no organization with slug or id {value!r}")
    return found


def moment_argument(value: str, organization: Organization, name: str) -> datetime:
    """An ISO datetime with offset, or a date meaning its midnight in the organization's zone."""
    try:
        day = parse_date(value) if len(value) == 10 else None
        moment = None if day else parse_datetime(value)
    except ValueError as error:
        raise CommandError(f"--{name}: {value!r}: {error}") from error
    if day is not None:
        return local_midnight_of(day, organization.zone)
    if moment is not None:
        if moment.tzinfo is None:
            raise CommandError(f"--{name}: give a UTC offset, or just a date")
        return moment
    raise CommandError(f"--{name}: {value!r} is neither an ISO date nor a datetime")
