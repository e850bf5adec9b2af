"""Webhooks (API.md §10): events an organization's endpoints receive, signed.

`emit_event` records the event and one delivery per subscribed webhook, and hands each delivery
to the Celery task once the transaction commits (an event of a rolled-back change is never sent).
"""

from django.db import transaction

from billing.models import Webhook, WebhookDelivery, WebhookEvent
from portal.models import Organization


def emit_event(*, organization: Organization, type: str, data: dict) -> WebhookEvent:
    event = WebhookEvent.objects.create(organization=organization, type=type, data=data)
    subscribed = [webhook for webhook in Webhook.objects.filter(organization=organization, deleted_at__isnull=True)
                  if type in webhook.events]
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(webhook=webhook, event=event) for webhook in subscribed])
    for delivery in deliveries:
        transaction.on_commit(lambda pk=delivery.pk: _schedule(pk))
    return event


def _schedule(delivery_id: int) -> None:
    from billing.tasks import deliver_webhook  # noqa: PLC0415 - tasks import this module (a cycle)

    deliver_webhook.delay(delivery_id)
