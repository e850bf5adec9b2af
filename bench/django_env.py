"""Run a benchmark against a throwaway test database on whatever DATABASE_URL names
(SQLite by default), so that measuring never touches real or demo data."""

import contextlib
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


@contextlib.contextmanager
def throwaway_database(purpose: str = "") -> Iterator[None]:
    """A fresh database for one benchmark, dropped afterwards. `purpose` gives it a name of its
    own (bench_<purpose>_<name>): only bench.usage_engine owns bench_<name>, the ten-million-event
    database it may keep (--keep-db) for bench.dialects and bench.pages to read; another
    benchmark recreating that name would silently destroy it (it did, once)."""
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    setup_test_environment()
    # A name of its own, so a benchmark never clobbers the test suite's database (or vice versa).
    test_settings = connection.settings_dict.setdefault("TEST", {})
    if connection.vendor == "sqlite":
        suffix = f"-{purpose}" if purpose else ""
        test_settings["NAME"] = str(Path(__file__).resolve().parent.parent / f".bench-db{suffix}.sqlite3")
    else:
        test_settings["NAME"] = f"bench_{purpose + '_' if purpose else ''}{connection.settings_dict['NAME']}"
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()


def summarize(label: str, samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{label:<48} median {statistics.median(ordered) / 1000:8.1f} µs   "
            f"p99 {p99 / 1000:8.1f} µs   n={len(ordered)}")


def heaviest_organization_owner():
    """On the database `bench.usage_engine --keep-db` left (bench_<name>, PostgreSQL): the fill
    state of the organization with the most events, and its owner `bench-owner` (made on the first
    call) with AdministratorAccess. Switches the default connection to that database."""
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("this reads the PostgreSQL database bench.usage_engine --keep-db left")
    connection.settings_dict["NAME"] = f"bench_{connection.settings_dict['NAME']}"
    connection.close()
    from portal import services
    from portal.models import Member, Organization
    from portal.ram import services as ram
    from usage.models import UsageFillState

    state = UsageFillState.objects.order_by("-events").first()
    if state is None:
        raise SystemExit("no usage in the kept database: run bench.usage_engine --keep-db first")
    organization = Organization.objects.get(pk=state.organization_id)
    member = Member.objects.filter(organization=organization, user__username="bench-owner").first() or \
        services.create_member(actor=services.SYSTEM, organization=organization, username="bench-owner",
                               password=None, role=Member.Role.OWNER)
    ram.attach_policy(actor=services.SYSTEM, policy=ram.system_policy("AdministratorAccess"), member=member)
    return state, member
