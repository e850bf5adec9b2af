"""Server time of every portal page (API.md §11), next to its API twin where it has one.

Two runs:
    python -m bench.pages [--days 30]      the demo's world on a throwaway database (SQLite by
                                           default, PostgreSQL with DATABASE_URL), seeded by seed_demo
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.pages --bench-db
                                           the heaviest organization of the ten-million-event database
                                           `bench.usage_engine --keep-db` left (bench_<name>)

Each page is fetched through Django's full stack (session login, middleware, RAM, templates)
`--rounds` times with the analytics cache cleared before each; the figure is the Server-Timing
header's server time, median and worst. Ten-million-event runs pin the clock to just after the
newest event, so "the last 30 days" are 30 full days for the page and its API twin alike.
"""

import argparse
import contextlib
import os
import statistics
import sys
from datetime import timedelta
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def _timed(client, path: str, rounds: int) -> tuple[float, float, int]:
    from django.core.cache import cache

    samples, status = [], 0
    for _ in range(rounds):
        cache.clear()
        response = client.get(path)
        status = response.status_code
        if response.streaming:
            b"".join(response.streaming_content)  # the CSV's rows are produced while streaming
        if status != 200:
            raise SystemExit(f"{path}: HTTP {status} {getattr(response, 'content', b'')[:300]!r}")
        samples.append(float(response["Server-Timing"].split("dur=")[1]))
    return statistics.median(samples), max(samples), status


def _report(title: str, rows: list[tuple[str, str]], client, rounds: int) -> None:
    results = []
    for label, path in tqdm(rows, desc="pages", unit="page", file=sys.stderr):
        median, worst, _ = _timed(client, path, rounds)
        results.append((label, path, median, worst))
    print(f"\n{title}\n")
    print("| page | path | median ms | worst ms |")
    print("|---|---|---:|---:|")
    for label, path, median, worst in results:
        print(f"| {label} | `{path}` | {median:.1f} | {worst:.1f} |")


def demo_run(days: int, rounds: int) -> None:
    from bench.django_env import throwaway_database

    with throwaway_database("pages"):
        from django.core.management import call_command
        from django.test import Client

        from billing.models import Budget, Invoice
        from keys.models import InferenceKey
        from portal.models import Member

        call_command("seed_demo", days=days, stdout=open(os.devnull, "w"))  # noqa: SIM115
        owner = Member.objects.select_related("organization").get(user__username="acme_owner")
        organization = owner.organization
        client = Client()
        client.force_login(owner.user)
        key = InferenceKey.objects.filter(organization=organization).order_by("pk").first()
        invoice = Invoice.objects.filter(organization=organization).order_by("pk").first()
        budget = Budget.objects.filter(organization=organization).order_by("pk").first()
        rows = [
            ("Dashboard, 30 days", "/"),
            ("Dashboard, 90 days", "/?range_days=90"),
            ("API twin: AIone obs/dashboard 30 days", "/api/v1/obs/dashboard?range_days=30"),
            ("Usage explorer, 7 days by day", "/usage/"),
            ("Usage explorer, 30 days by model then day", _explorer_path(organization, 30, "model", "day")),
            ("Usage CSV, 30 days by model then day", _explorer_path(organization, 30, "model", "day", csv=True)),
            ("API keys", "/keys/"),
            ("API key detail", f"/keys/{key.uuid}/"),
            ("New key form", "/keys/new/"),
            ("Billing overview", "/billing/"),
            ("Budgets", "/billing/budgets/"),
            ("Budget", f"/billing/budgets/{budget.uuid}/"),
            ("Access", "/access/"),
            ("Policy", "/access/policies/ReadOnlyAccess/"),
            ("Policy simulator (a decision)", f"/access/simulate/?member={owner.uuid}&action=keys:CreateKey"),
            ("Audit log", "/audit/"),
        ]
        if invoice is not None:
            rows += [("Invoice", f"/billing/invoices/{invoice.uuid}/"),
                     ("Invoice PDF", f"/billing/invoices/{invoice.uuid}/pdf")]
        _report(f"Portal pages, demo world ({days} days of usage), acme_owner, {rounds} rounds", rows, client, rounds)


def _explorer_path(organization, days: int, *group_by: str, csv: bool = False, end=None) -> str:
    from django.utils import timezone

    last = (end or timezone.now()).astimezone(organization.zone).date()
    first = last - timedelta(days=days - 1)
    groups = "".join(f"&group_by={g}" for g in group_by)
    return f"/usage/{'export.csv' if csv else ''}?start_date={first}&end_date={last}{groups}"


def bench_db_run(rounds: int) -> None:
    import time_machine

    from bench.django_env import heaviest_organization_owner

    state, member = heaviest_organization_owner()
    from django.test import Client

    organization = member.organization
    now = state.newest_event_at + timedelta(minutes=1)
    client = Client()
    client.force_login(member.user)
    with contextlib.ExitStack() as stack:
        stack.enter_context(time_machine.travel(now, tick=True))
        local_today = now.astimezone(organization.zone).date()
        month_start = local_today - timedelta(days=29)
        rows = [
            ("Dashboard, 30 days", "/"),
            ("API twin: AIone obs/dashboard 30 days", "/api/v1/obs/dashboard?range_days=30"),
            ("Dashboard, 7 days", "/?range_days=7"),
            ("API twin: AIone obs/dashboard 7 days", "/api/v1/obs/dashboard?range_days=7"),
            ("Usage explorer, 30 days by day", _explorer_path(organization, 30, "day", end=now)),
            ("API twin: AIone obs/usage 30 days by day", f"/api/v1/obs/usage?start_date={month_start}&group_by=day"),
            ("Usage explorer, 30 days by model then day", _explorer_path(organization, 30, "model", "day", end=now)),
            ("API twin: AIone obs/usage 30 days by day,model",
             f"/api/v1/obs/usage?start_date={month_start}&group_by=day,model"),
            ("Usage explorer, 90 days by department", _explorer_path(organization, 90, "department", end=now)),
        ]
        print(f"organization {organization.name}: {state.events:,} events, clock pinned at {now:%Y-%m-%d %H:%M} UTC")
        _report(f"Portal pages on the ten-million-event database, {rounds} rounds", rows, client, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30, help="days of demo usage (default 30)")
    parser.add_argument("--rounds", type=int, default=5, help="timed requests per page (median reported)")
    parser.add_argument("--bench-db", action="store_true", help="the ten-million-event database instead of the demo")
    args = parser.parse_args()
    if args.bench_db:
        bench_db_run(args.rounds)
    else:
        demo_run(args.days, args.rounds)


if __name__ == "__main__":
    main()
