import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from portal import demo


class Command(BaseCommand):
    help = "Create the demo catalog, plans, organizations, people and keys, then generate usage."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=int, default=30, help="days of usage to generate (0: none)")
        parser.add_argument("--json", action="store_true", help="print one JSON document and nothing else")

    def handle(self, *args: Any, days: int, json: bool, **options: Any) -> None:
        if days < 0:
            self.stderr.write("--days must be 0 or more")
            sys.exit(2)
        document = demo.seed_world(usage_days=days)
        accepted = duplicates = 0
        if days:
            units = len(demo.plan_usage(days))
            # The bar goes to stderr so that --json leaves stdout as one clean document.
            with tqdm(total=units, desc="demo usage", unit="org-day", file=sys.stderr,
                      disable=json and not sys.stderr.isatty()) as bar:
                def advance(accepted_so_far: int, duplicates_so_far: int) -> None:
                    bar.set_postfix(events=accepted_so_far, duplicates=duplicates_so_far)
                    bar.update(1)

                accepted, duplicates = demo.generate_usage(days, on_unit_done=advance)
        demo.seed_upstream()
        demo.seed_grants()  # after the usage, so that the welcome credit is still there to expire
        demo.seed_budgets()
        invoices = demo.seed_invoices() if days else 0  # --days 0: no usage, no invoice (API.md §10)
        if json:
            self.stdout.write(_json_dumps(document))
            return
        self.stdout.write(self.style.SUCCESS(
            f"Demo ready: {accepted} usage events stored, {duplicates} already present, {invoices} invoices issued."))
        self.stdout.write("Portal: sign in at /login/ with any login below; owners and admins also use /admin/.")
        self.stdout.write(f"Platform superuser: {demo.PLATFORM_ADMIN} / {demo.DEMO_PASSWORD}")
        self.stdout.write(f"Reader in both organizations (the switcher): {demo.CONSULTANT} / {demo.DEMO_PASSWORD}")
        self.stdout.write(f"Service token (gateway): {document['service_token']}")
        for org in document["orgs"]:
            self.stdout.write(f"\n{org['name']} ({org['timezone']}, {org['currency']})")
            for member in org["members"]:
                self.stdout.write(
                    f"  {member['role']:<7} login {member['username']} / {member['password']}"
                    f"   management key {member['management_key']}"
                )


def _json_dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2)
