from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from usage.management.commands._arguments import organization_argument
from usage.models import UsageEvent
from usage.services import rebuild_rollups


class Command(BaseCommand):
    help = "Recompute every rollup level of an organization from its raw events (e.g. after a timezone change)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="organization slug or id")

    def handle(self, *args: Any, org: str, **options: Any) -> None:
        organization = organization_argument(org)
        total = UsageEvent.objects.filter(organization=organization).count()
        with tqdm(total=total, desc=f"rebuild {organization.slug}", unit="event") as bar:
            folded = rebuild_rollups(organization=organization, progress=bar.update)
        self.stdout.write(f"{organization.name}: {folded} events folded into every rollup level "
                          f"(days in {organization.timezone}).")
