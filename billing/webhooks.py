"""Webhooks (API.md §10): an organization's endpoints receive its events, signed and retried.

Writes: `create_webhook` (returns the secret, the only time it exists in clear outside this
module), `delete_webhook` (soft: the delivery log survives), `emit_event` (records the event and
one delivery per subscribed webhook, handed to the Celery task once the transaction commits, so an
event of a rolled-back change is never sent) and `reencrypt_webhook_secrets` (after a key rotation).
Reads: `webhooks_of`, `deliveries_of`. The task calls `deliver`, one attempt per call.

Rules this module keeps:
- Only http(s) URLs. Unless settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS, a URL whose host resolves to
  any loopback, private, link-local, unique-local, multicast, reserved or unspecified address is
  refused, at creation and again at every attempt (DNS may have changed since: rebinding); the
  attempt then connects to the address that was checked, not to a second lookup's answer.
- The signing secret is stored encrypted (Fernet, settings.FIELD_ENCRYPTION_KEY); it is never
  logged, nor is a signature.
- A delivery's body is serialized once per attempt and signed Stripe-style:
  `X-Portal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`; the event id in it
  is the same on every retry, so a receiver can drop duplicates.
- Retries back off exponentially (RETRY_BASE_SECONDS × 2^(attempts−1), capped) up to the task's
  max_retries; a delivered delivery is never sent again.
"""

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from cryptography.fernet import InvalidToken, MultiFernet
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.models import Webhook, WebhookDelivery, WebhookEvent
from keys.encryption import WEBHOOK_SECRETS, key_ring
from portal.models import Organization
from portal.services import Actor, record_audit

logger = logging.getLogger(__name__)

EVENT_TYPES: tuple[str, ...] = tuple(Webhook.Event.values)
SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "X-Portal-Signature"
USER_AGENT = "LLM-Portal-Webhooks/1.0"
TIMEOUT_SECONDS = 10.0
RETRY_CAP_SECONDS = 3600
_LAST_ERROR_LENGTH = WebhookDelivery._meta.get_field("last_error").max_length


class WebhookRefused(ValueError):
    """A webhook the rules refuse; `field` is the request field to name in the 422."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


class RetryingTask(Protocol):
    """What `deliver` needs of the bound Celery task (tests may hand in their own)."""

    max_retries: int | None
    request: Any

    def retry(self, *, countdown: float) -> Exception: ...


# --- the secret, encrypted at rest ------------------------------------------------------------------

def _fernet() -> MultiFernet:
    """The first configured key encrypts; every configured key (then the derived one) decrypts,
    so a key is rotated by putting the new one first and running `reencrypt_webhook_secrets`."""
    return key_ring(WEBHOOK_SECRETS)


def encrypt_secret(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def decrypt_secret(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


# --- which URLs may be called ------------------------------------------------------------------------

def _is_forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    # `not is_global` also catches what the named classes miss: shared address space (100.64/10),
    # documentation and benchmarking ranges.
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class _Destination:
    """Where an attempt connects: the URL as given, or (guarding private networks) one per
    checked address, with the original Host header and TLS server name."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def _checked_url(url: str) -> str:
    """The URL if its form is acceptable; the network check is `_destinations`."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as error:
        raise WebhookRefused("url", f"not a valid URL ({error})") from error
    if parts.scheme.lower() not in ("http", "https"):
        raise WebhookRefused("url", "only http and https URLs are accepted")
    if not parts.hostname:
        raise WebhookRefused("url", "the URL names no host")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as error:
        raise WebhookRefused("url", f"not a valid URL ({error})") from error
    if len(url) > Webhook._meta.get_field("url").max_length:
        raise WebhookRefused("url", "longer than 2000 characters")
    return url


def _destinations(url: str) -> list[_Destination]:
    """Where a request to `url` may go, refusing (WebhookRefused) a host that resolves to any
    address in a private network unless settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS.

    Every resolved address is checked (an attacker's DNS may answer one public and one private
    address), and the request is pinned to the checked addresses, so that a second lookup by
    the HTTP client cannot answer differently (DNS rebinding)."""
    if settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS:
        return [_Destination(url)]
    target = httpx.URL(url)
    try:
        addresses = _resolve(target.host, target.port or (443 if target.scheme == "https" else 80))
    except (OSError, UnicodeError) as error:
        raise WebhookRefused("url", f"the host {target.host!r} does not resolve") from error
    if not addresses:
        raise WebhookRefused("url", f"the host {target.host!r} does not resolve")
    for address in addresses:
        if _is_forbidden(ipaddress.ip_address(address.split("%")[0])):
            raise WebhookRefused("url", f"the host {target.host!r} resolves to {address}, a loopback, private, "
                                        "link-local or otherwise non-public address")
    host_header = target.netloc.decode("ascii")
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return [_Destination(str(target.copy_with(host=address)), {"Host": host_header}, extensions)
            for address in addresses]


def _checked_events(events: Iterable[str]) -> list[str]:
    if isinstance(events, str | bytes):
        raise WebhookRefused("events", "a list of event types")
    chosen = list(dict.fromkeys(events))
    if not chosen:
        raise WebhookRefused("events", f"name at least one of {', '.join(EVENT_TYPES)}")
    unknown = [event for event in chosen if event not in EVENT_TYPES]
    if unknown:
        raise WebhookRefused("events", f"unknown event type(s) {', '.join(map(str, unknown))}; "
                                       f"choose from {', '.join(EVENT_TYPES)}")
    return chosen


# --- writes ------------------------------------------------------------------------------------------

def create_webhook(*, actor: Actor, organization: Organization, url: str,
                   events: Iterable[str]) -> tuple[Webhook, str]:
    """A new endpoint and its signing secret, which the caller shows once and never again."""
    url = _checked_url(url)
    events = _checked_events(events)
    _destinations(url)  # resolved before the transaction: a slow DNS answer holds no lock
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        webhook = Webhook.objects.create(organization=organization, url=url, events=events,
                                         secret_encrypted=encrypt_secret(secret))
        record_audit(actor=actor, organization=organization, action="webhook.create", target=webhook,
                     detail={"uuid": str(webhook.uuid), "url": url, "events": events})
    return webhook, secret


@transaction.atomic
def delete_webhook(*, actor: Actor, webhook: Webhook) -> Webhook:
    """Stop sending to `webhook`: soft, so its delivery log stays readable (in the admin)."""
    if webhook.deleted_at is None:
        webhook.deleted_at = timezone.now()
        webhook.save(update_fields=["deleted_at"])
        record_audit(actor=actor, organization=webhook.organization, action="webhook.delete", target=webhook,
                     detail={"uuid": str(webhook.uuid), "url": webhook.url})
    return webhook


@transaction.atomic
def reencrypt_webhook_secrets(*, actor: Actor) -> int:
    """Rewrite every stored secret under the first key of FIELD_ENCRYPTION_KEY (after a rotation);
    afterwards the old keys can be dropped from the setting. Returns how many were rewritten."""
    ring = _fernet()
    rewritten = 0
    for webhook in Webhook.objects.select_for_update().only("pk", "secret_encrypted"):
        webhook.secret_encrypted = ring.rotate(webhook.secret_encrypted.encode()).decode()
        webhook.save(update_fields=["secret_encrypted"])
        rewritten += 1
    record_audit(actor=actor, organization=None, action="webhook.secrets_reencrypt", target="webhook",
                 detail={"count": rewritten})
    return rewritten


def emit_event(*, organization: Organization, type: str, data: dict) -> WebhookEvent:
    """Record `type` with `data` (JSON) for every subscribed endpoint of `organization`. Sent only
    when the caller's transaction commits."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}")
    with transaction.atomic():
        event = WebhookEvent.objects.create(organization=organization, type=type, data=data)
        subscribed = [webhook for webhook in webhooks_of(organization) if type in webhook.events]
        deliveries = WebhookDelivery.objects.bulk_create(
            [WebhookDelivery(webhook=webhook, event=event) for webhook in subscribed])
        for delivery in deliveries:
            transaction.on_commit(lambda pk=delivery.pk: _schedule(pk))
    return event


def _schedule(delivery_id: int) -> None:
    from billing.tasks import deliver_webhook  # noqa: PLC0415 - tasks import this module (a cycle)

    if deliver_webhook.app.conf.task_always_eager:
        _deliver_at_once(delivery_id, max_retries=deliver_webhook.max_retries)
    else:
        deliver_webhook.delay(delivery_id)


class _AgainNow(Exception):
    pass


@dataclass
class _RetryAtOnce:
    """The task's stand-in when there is no broker (tasks run eagerly): nothing can wait for a
    countdown, so each retry follows at once."""

    max_retries: int | None
    request: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(retries=0))

    def retry(self, *, countdown: float) -> Exception:
        self.request.retries += 1
        return _AgainNow()


def _deliver_at_once(delivery_id: int, *, max_retries: int | None) -> None:
    # Not Celery's eager retry: with task_eager_propagates (our setting) it raises the retry into
    # the change that emitted the event, after that change has committed.
    task = _RetryAtOnce(max_retries)
    for _attempt in range((max_retries or 0) + 1):
        try:
            deliver(delivery_id, task=task)
            return
        except _AgainNow:
            continue


# --- reads -------------------------------------------------------------------------------------------

def webhooks_of(organization: Organization) -> QuerySet[Webhook]:
    """The organization's endpoints that are not deleted, newest first."""
    return Webhook.objects.filter(organization=organization, deleted_at__isnull=True).order_by("-created_at", "-pk")


def deliveries_of(webhook: Webhook) -> QuerySet[WebhookDelivery]:
    return webhook.deliveries.select_related("event").order_by("-created_at", "-pk")


# --- delivery ----------------------------------------------------------------------------------------

def event_body(event: WebhookEvent) -> bytes:
    """The exact bytes that are POSTed and signed."""
    payload = {"id": str(event.uuid), "type": event.type, "created_at": event.created_at.isoformat(),
               "data": event.data}
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay(attempts: int) -> int:
    """Seconds before the attempt after `attempts` failed ones: base × 2^(attempts−1), capped."""
    base = int(settings.WEBHOOK_RETRY_BASE_SECONDS)
    return min(base * 2 ** max(attempts - 1, 0), RETRY_CAP_SECONDS)


class _Refused(Exception):
    """This attempt must not be made and retrying will not help (the host now resolves to a
    private address; the secret cannot be decrypted under the configured keys)."""


def _post(delivery: WebhookDelivery, now: datetime) -> int:
    """One POST of the delivery's event; the status code, or an httpx error / _Refused."""
    webhook, event = delivery.webhook, delivery.event
    try:
        destinations = _destinations(webhook.url)
    except WebhookRefused as refused:
        raise _Refused(f"refused: {refused.message}") from refused
    try:
        secret = decrypt_secret(webhook.secret_encrypted)
    except InvalidToken as error:
        raise _Refused("not sent: the signing secret cannot be decrypted under FIELD_ENCRYPTION_KEY") from error
    body = event_body(event)
    timestamp = int(now.timestamp())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               SIGNATURE_HEADER: signature_header(secret, timestamp, body)}
    # No redirects (a 3xx could point anywhere, private networks included) and no proxy from the
    # environment (it would make the connection instead of the address checked above).
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
        for index, destination in enumerate(destinations):
            try:
                # Streamed and closed unread: a receiver cannot make us download a large answer.
                with client.stream("POST", destination.url, content=body, headers={**headers, **destination.headers},
                                   extensions=destination.extensions) as response:
                    return response.status_code
            except httpx.ConnectError:
                if index == len(destinations) - 1:
                    raise  # the host's other addresses were tried first
    raise AssertionError("unreachable: _destinations never returns an empty list")


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().rstrip(":")
    return text[:_LAST_ERROR_LENGTH]


def deliver(delivery_id: int, *, task: RetryingTask) -> int | None:
    """One attempt at a delivery (the Celery task's body). Returns the receiver's status code.

    A 2xx marks it delivered. Anything else (another status, a connection error, a timeout)
    counts a failed attempt and, while the task has retries left, schedules the next one with
    `task.retry` (raised, as Celery expects); after the last, `next_attempt_at` is cleared. A
    refusal (the host now resolves to a private address; the webhook was deleted) is final.
    Already delivered, or being attempted by another worker right now: nothing is sent."""
    with transaction.atomic():
        # The row stays locked while the request is made (at most TIMEOUT_SECONDS): a second
        # worker handed the same delivery skips it instead of sending it twice.
        delivery = (WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
                    .select_related("webhook", "event").filter(pk=delivery_id).first())
        if delivery is None or delivery.delivered_at is not None:
            return None if delivery is None else delivery.status_code
        now = timezone.now()
        final = False
        if delivery.webhook.deleted_at is not None:
            delivery.last_error, delivery.next_attempt_at = "not sent: the webhook was deleted", None
            delivery.save(update_fields=["last_error", "next_attempt_at"])
            return None
        delivery.attempts += 1
        try:
            status_code: int | None = _post(delivery, now)
        except _Refused as refused:
            status_code, delivery.last_error, final = None, str(refused)[:_LAST_ERROR_LENGTH], True
        except httpx.HTTPError as error:
            status_code, delivery.last_error = None, _error_text(error)
        else:
            delivery.last_error = "" if 200 <= status_code < 300 else f"HTTP {status_code}"
        delivery.status_code = status_code
        retry_in: int | None = None
        if status_code is not None and 200 <= status_code < 300:
            delivery.delivered_at, delivery.next_attempt_at = timezone.now(), None
        elif not final and _retries_left(task, delivery):
            retry_in = retry_delay(delivery.attempts)
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        else:
            delivery.next_attempt_at = None
        delivery.save(update_fields=["attempts", "status_code", "last_error", "delivered_at", "next_attempt_at"])
    logger.info("webhook delivery %s, attempt %s: %s%s", delivery.pk, delivery.attempts,
                f"HTTP {status_code}" if status_code is not None else delivery.last_error,
                f"; next attempt in {retry_in}s" if retry_in is not None else "")
    if retry_in is not None:
        # Raised after the commit above, so the failed attempt is recorded whatever happens next.
        raise task.retry(countdown=retry_in)
    return status_code


def _retries_left(task: RetryingTask, delivery: WebhookDelivery) -> bool:
    if task.max_retries is None:
        return False  # Celery's "retry forever" is never what a webhook wants
    return delivery.attempts <= task.max_retries and (task.request.retries or 0) < task.max_retries


__all__ = ["EVENT_TYPES", "SECRET_PREFIX", "SIGNATURE_HEADER", "WebhookRefused", "create_webhook",
           "decrypt_secret", "delete_webhook", "deliver", "deliveries_of", "emit_event", "encrypt_secret",
           "event_body", "reencrypt_webhook_secrets", "retry_delay", "signature_header", "webhooks_of"]
