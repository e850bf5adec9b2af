from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.services import Actor
from usage.management.commands._arguments import moment_argument, organization_argument
from usage.services import rerate_events


class Command(BaseCommand):
    help = "Re-rate an organization's events in [--from, --to) at the recorded prices and say what changed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organization slug or id")
        parser.add_argument("--from", dest="start", required=True, help="date (org's zone) or ISO datetime")
        parser.add_argument("--to", dest="end", required=True, help="date (org's zone) or ISO datetime, exclusive")

    def handle(self, *args: Any, org: str, start: str, end: str, **options: Any) -> None:
        organization = organization_argument(org)
        start_at = moment_argument(start, organization, "from")
        end_at = moment_argument(end, organization, "to")
        if end_at <= start_at:
            raise CommandError("--to must be after --from")
        report = rerate_events(actor=Actor(label="manage.py rerate"), organization=organization, start=start_at,
                               end=end_at)
        self.stdout.write(f"{organization.name}: {report.events_checked} events checked, "
                          f"{report.events_changed} re-rated; total {report.cost_before} -> {report.cost_after}")
        for code, (count, before, after) in sorted(report.changed_by_model.items()):
            self.stdout.write(f"  {code}: {count} events, {before} -> {after}")
