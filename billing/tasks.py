"""Celery tasks for billing: thin wrappers that take ids and call services."""

from celery import shared_task

from billing import budgets, services, webhooks


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
