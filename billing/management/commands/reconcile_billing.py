from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.reconciliation import reconcile


class Command(BaseCommand):
    help = ("Check every account's balance against its ledger entries and usage, and every issued invoice's "
            "usage lines against raw events. Reports differences (exit status 1), never fixes them.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--invoices-since", type=date.fromisoformat, default=None,
                            help="YYYY-MM-DD; check only invoices whose period ends on or after it")

    def handle(self, *args: Any, invoices_since: date | None, **options: Any) -> None:
        report = reconcile(invoices_since=invoices_since)
        for difference in report.balance_differences:
            self.stdout.write(f"balance  {difference.organization} (org {difference.organization_id}): stored "
                              f"{difference.balance} {difference.currency}, entries {difference.entries} − usage "
                              f"{difference.usage} = {difference.expected}; off by {difference.difference}")
        for difference in report.invoice_differences:
            self.stdout.write(f"invoice  {difference.invoice_no} (org {difference.organization_id}) model "
                              f"{difference.model_id} department {difference.department_id}: invoiced "
                              f"{difference.invoiced}, events {difference.events}; off by {difference.difference}")
        self.stdout.write(f"{report.accounts_checked} accounts and {report.invoices_checked} invoices checked: "
                          f"{len(report.balance_differences)} balance and {len(report.invoice_differences)} "
                          "invoice differences.")
        if not report.clean:
            raise CommandError("reconciliation found differences (listed above); nothing was changed")
