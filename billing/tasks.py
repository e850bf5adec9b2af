"""Celery tasks for billing: thin wrappers that call services."""

from celery import shared_task

from billing import services


@shared_task(name="billing.tasks.expire_subscriptions")
def expire_subscriptions() -> int:
    return services.expire_subscriptions()
