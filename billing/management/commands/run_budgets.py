"""`python manage.py run_budgets`: the budget job now (thresholds and alerts, hard limits, new
periods, grant expiry), exactly what Celery beat runs every 5 minutes."""

from django.core.management.base import BaseCommand

from billing.budgets import run_budget_job


class Command(BaseCommand):
    help = "Run the budget job now: threshold alerts, hard limits, new periods, grant expiry."

    def handle(self, *args, **options) -> None:
        report = run_budget_job()
        self.stdout.write(f"{report.budgets} budgets checked: {report.alerts} alerts sent, {report.exhausted} "
                          f"hard limits reached, {report.reopened} reopened for a new period, "
                          f"{report.grants_expired} grants expired.")
