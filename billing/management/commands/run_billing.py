import sys
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone
from tqdm import tqdm

from billing.invoicing import run_billing


class Command(BaseCommand):
    help = ("Invoice every period (a calendar month in the organization's timezone) that ended before --date, "
            "has usage or a subscription and no invoice yet; issue drafts whose grace has passed. Idempotent.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--date", type=date.fromisoformat, default=None,
                            help="YYYY-MM-DD; periods ending before it are invoiced (default: today, UTC)")

    def handle(self, *args: Any, date: date | None, **options: Any) -> None:
        day = date or timezone.localdate()
        with tqdm(desc=f"run_billing {day}", unit="org", file=sys.stderr) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(1)

            report = run_billing(date=day, progress=progress)
        counts = report.counts()
        self.stdout.write(f"run_billing {day}: {report.accounts} accounts; {counts['invoices_created']} invoices "
                          f"made ({counts['drafts_created']} as drafts), {counts['invoices_issued']} issued; "
                          f"{counts['empty_periods']} periods with nothing to bill; {counts['already_invoiced']} "
                          f"already invoiced by another run; {counts['accounts_skipped']} accounts up to date; "
                          f"{counts['accounts_failed']} failed.")
        for outcome in report.outcomes:
            if outcome.action != "skipped":
                numbers = f" {', '.join(outcome.invoice_nos)}" if outcome.invoice_nos else ""
                self.stdout.write(f"  {outcome.organization}: {outcome.action}{numbers}"
                                  f"{f' ({outcome.reason})' if outcome.reason else ''}")
        if report.accounts_failed:
            self.stderr.write(self.style.ERROR(f"{report.accounts_failed} account(s) could not be invoiced; "
                                               "see the reasons above (they are retried on the next run)."))
