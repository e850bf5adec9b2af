"""Celery tasks for billing: thin wrappers that take ids and call services."""

from datetime import date

from celery import shared_task
from django.utils import timezone

from billing import budgets, invoicing, reconciliation, services, webhooks


@shared_task(name="billing.tasks.expire_subscriptions")
def expire_subscriptions() -> int:
    return services.expire_subscriptions()


@shared_task(name="billing.tasks.run_budget_job")
def run_budget_job() -> dict:
    """Every 5 minutes (Celery beat): alerts, hard limits, new periods, grant expiry."""
    report = budgets.run_budget_job()
    return vars(report)


@shared_task(name="billing.tasks.deliver_webhook", bind=True, max_retries=8)
def deliver_webhook(self, delivery_id: int) -> int | None:
    """One attempt at a delivery; a failed attempt is retried with exponential backoff."""
    return webhooks.deliver(delivery_id, task=self)


@shared_task(name="billing.tasks.run_nightly_billing")
def run_nightly_billing(day: str | None = None) -> dict[str, int | str]:
    """The nightly invoice job for today (UTC), or for `day` (ISO date) when an operator names one."""
    report = invoicing.run_billing(date=date.fromisoformat(day) if day else timezone.localdate())
    return report.counts()


@shared_task(name="billing.tasks.reconcile_billing")
def reconcile_billing() -> dict[str, int]:
    """The nightly check of balances and invoices against raw events; differences are logged at ERROR."""
    return reconciliation.reconcile().counts()
