"""Webhooks (API.md §10): alice subscribes Acme's endpoint; events reach it signed, are retried
with backoff until it answers 2xx, and never go to a private network unless the setting says so.

Deliveries go to a real HTTP receiver that each test starts on 127.0.0.1, so those tests set
WEBHOOK_ALLOW_PRIVATE_NETWORKS=True. Retries are driven three ways, each named in its test:
- by calling `webhooks.deliver` ourselves, one attempt per call, with a task double that records
  the countdown it was asked to retry after (the backoff);
- by the no-broker setup (tasks run eagerly, `eager` fixture): the event is handed over on commit
  and each retry follows at once, since nothing can wait for a countdown;
- by a real Celery worker subprocess through the broker (Redis when CELERY_BROKER_URL is set),
  whose `task.retry` re-publishes the attempt after its countdown."""

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import time_machine
from cryptography.fernet import Fernet, InvalidToken
from django.db import connection, transaction
from django.urls import reverse

from billing import webhooks
from billing.models import Webhook, WebhookDelivery, WebhookEvent
from billing.tasks import deliver_webhook
from portal.celery import app
from portal.models import AuditLog
from portal.services import SYSTEM, Actor
from tests import factories
from tests.api_helpers import client_for
from tests.celery_worker_helpers import broker_for_test, private_queue, running_worker

ALL_EVENTS = ["budget.threshold", "budget.exhausted", "invoice.issued"]
THRESHOLD = {"budget_id": "b-1", "scope": "organization", "target_id": None, "threshold": 80,
             "amount": "100.00", "spent": "80.10", "currency": "CNY", "period_start": "2026-03-01"}


# --- a real receiver -----------------------------------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 answering each POST with the next of `statuses` (the last one
    repeats), recording what it received."""

    def __init__(self) -> None:
        self.statuses = [200]
        self.received: list[SimpleNamespace] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(SimpleNamespace(path=self.path, headers=dict(self.headers), body=body))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", f"{receiver.url}redirected")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, *statuses: int) -> "Receiver":
        self.statuses = list(statuses)
        return self


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def private_ok(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    return settings


@pytest.fixture
def private_refused(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = False
    return settings


@pytest.fixture
def eager(monkeypatch):
    # With CELERY_BROKER_URL set (CI) the app publishes to Redis; these stories run the task in
    # process, as a setup without a broker does.
    monkeypatch.setitem(app.conf, "task_always_eager", True)


class RecordingTask:
    """Stands in for the bound Celery task: records each countdown it is asked to retry after."""

    class RetryRequested(Exception):
        pass

    def __init__(self, max_retries: int = 8) -> None:
        self.max_retries = max_retries
        self.request = SimpleNamespace(retries=0)
        self.countdowns: list[int] = []

    def retry(self, *, countdown: float) -> Exception:
        self.countdowns.append(countdown)
        self.request.retries += 1
        return self.RetryRequested(countdown)


def verify(secret: str, request: SimpleNamespace) -> dict:
    """What a receiver does: recompute the HMAC of "<t>.<raw body>" under the secret."""
    parts = dict(part.split("=", 1) for part in request.headers["X-Portal-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), "the signature does not verify"
    return {"t": int(parts["t"]), **json.loads(request.body)}


def subscribe(organization, url: str, events=ALL_EVENTS) -> tuple[Webhook, str]:
    return webhooks.create_webhook(actor=SYSTEM, organization=organization, url=url, events=events)


def emit_and_commit(django_capture_on_commit_callbacks, organization, type="budget.threshold", data=THRESHOLD):
    with django_capture_on_commit_callbacks(execute=True):
        return webhooks.emit_event(organization=organization, type=type, data=data)


# --- creating, listing, deleting through the API -----------------------------------------------

def test_alice_subscribes_an_endpoint_and_sees_its_secret_once(ram_world, private_ok, schema_validator):
    alice = client_for(ram_world.alice)
    created = alice.post("/api/v1/billing/webhooks", {"url": "http://127.0.0.1:9/hook",
                                                      "events": ["budget.threshold", "invoice.issued"]},
                         format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert set(body) == {"id", "url", "events", "secret", "created_at"}
    assert body["secret"].startswith("whsec_") and len(body["secret"]) == len("whsec_") + 43  # 32 bytes
    assert body["url"] == "http://127.0.0.1:9/hook" and body["events"] == ["budget.threshold", "invoice.issued"]
    schema_validator("/api/v1/billing/webhooks", "post", body)

    listed = alice.get("/api/v1/billing/webhooks")
    assert listed.status_code == 200
    assert listed.json() == {"items": [{k: v for k, v in body.items() if k != "secret"}], "total": 1}
    schema_validator("/api/v1/billing/webhooks", "get", listed.json())
    assert body["secret"] not in listed.content.decode()
    webhook = Webhook.objects.get(uuid=body["id"])
    assert AuditLog.objects.filter(action="webhook.create", target_id=str(webhook.pk),
                                   actor=ram_world.alice).exists()


@pytest.mark.parametrize("url", [
    "ftp://files.example.com/hook", "file:///etc/passwd", "javascript:alert(1)", "hooks.example.com/no-scheme",
    "http://", "http://127.0.0.1:99999/", "http://[::1",
], ids=["ftp", "file", "javascript", "no-scheme", "no-host", "bad-port", "bad-ipv6"])
def test_only_http_and_https_urls_are_accepted(ram_world, private_ok, url):
    response = client_for(ram_world.alice).post("/api/v1/billing/webhooks", {"url": url, "events": ALL_EVENTS},
                                                format="json")
    assert response.status_code == 422
    assert [problem["loc"] for problem in response.json()["detail"]] == [["body", "url"]]
    assert not Webhook.objects.exists()


@pytest.mark.parametrize("events", [[], ["invoice.paid"], "invoice.issued", None],
                         ids=["empty", "unknown", "not-a-list", "missing"])
def test_events_must_name_known_event_types(ram_world, private_ok, events):
    body = {"url": "http://127.0.0.1:9/hook"} | ({"events": events} if events is not None else {})
    response = client_for(ram_world.alice).post("/api/v1/billing/webhooks", body, format="json")
    assert response.status_code == 422
    assert all(problem["loc"][:2] == ["body", "events"] for problem in response.json()["detail"])
    with pytest.raises(webhooks.WebhookRefused) as refused:
        subscribe(ram_world.acme, "http://127.0.0.1:9/hook", events=events or [])
    assert refused.value.field == "events"


PRIVATE_URLS = [
    "http://127.0.0.1/", "http://[::1]/", "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/", "http://localhost:8080/", "http://0.0.0.0/", "http://[fd00::1]/",
    "http://[fe80::1]/", "http://224.0.0.1/", "http://100.64.0.1/", "http://[::ffff:127.0.0.1]/",
    "https://240.0.0.1/",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_network_urls_are_refused_unless_the_setting_allows_them(ram_world, private_refused, url):
    alice = client_for(ram_world.alice)
    response = alice.post("/api/v1/billing/webhooks", {"url": url, "events": ALL_EVENTS}, format="json")
    assert response.status_code == 422, response.content
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["body", "url"] and "resolves to" in problem["msg"]
    private_refused.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    assert alice.post("/api/v1/billing/webhooks", {"url": url, "events": ALL_EVENTS},
                      format="json").status_code == 201


@pytest.fixture
def fake_dns(monkeypatch):
    """Names of our choosing resolve to addresses of our choosing (everything else as usual)."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                    for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


def test_every_resolved_address_is_checked(world, private_refused, fake_dns):
    fake_dns["hooks.acme.example"] = ["93.184.215.14"]
    webhook, _ = subscribe(world.acme, "https://hooks.acme.example/portal")
    assert webhook.url == "https://hooks.acme.example/portal"
    fake_dns["mixed.acme.example"] = ["93.184.215.14", "10.0.0.5"]  # one public, one private answer
    with pytest.raises(webhooks.WebhookRefused, match="10.0.0.5"):
        subscribe(world.acme, "https://mixed.acme.example/portal")
    with pytest.raises(webhooks.WebhookRefused, match="does not resolve"):
        subscribe(world.acme, "https://nowhere.invalid/portal")


# --- delivery ------------------------------------------------------------------------------------

def test_a_delivery_is_signed_with_the_endpoints_secret(
        world, private_ok, eager, receiver, django_capture_on_commit_callbacks):
    webhook, secret = subscribe(world.acme, receiver.url + "hooks/portal")
    before = int(time.time())
    event = emit_and_commit(django_capture_on_commit_callbacks, world.acme)

    [request] = receiver.received
    assert request.path == "/hooks/portal"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("LLM-Portal-Webhooks/")
    sent = verify(secret, request)
    assert before <= sent["t"] <= int(time.time())
    assert sent["id"] == str(event.uuid) and sent["type"] == "budget.threshold" and sent["data"] == THRESHOLD
    assert datetime.fromisoformat(sent["created_at"]) == event.created_at
    with pytest.raises(AssertionError, match="does not verify"):
        verify("whsec_someone-else", request)

    delivery = WebhookDelivery.objects.get(webhook=webhook, event=event)
    assert delivery.status_code == 200 and delivery.attempts == 1 and delivery.delivered_at is not None
    assert delivery.next_attempt_at is None and delivery.last_error == ""


def test_only_subscribed_live_endpoints_of_the_organization_receive_an_event(
        world, private_ok, eager, receiver, django_capture_on_commit_callbacks):
    subscribe(world.acme, receiver.url + "thresholds", events=["budget.threshold"])
    subscribe(world.acme, receiver.url + "invoices", events=["invoice.issued"])
    gone, _ = subscribe(world.acme, receiver.url + "deleted", events=["budget.threshold"])
    webhooks.delete_webhook(actor=SYSTEM, webhook=gone)
    subscribe(world.globex, receiver.url + "globex", events=["budget.threshold"])
    emit_and_commit(django_capture_on_commit_callbacks, world.acme)
    assert [request.path for request in receiver.received] == ["/thresholds"]


def test_a_500_then_a_200_is_retried_and_delivered_with_the_same_event_id(
        world, private_ok, eager, receiver, django_capture_on_commit_callbacks):
    # Driven by the no-broker (eager) setup: on commit, an attempt → 500 → the retry follows at
    # once → 200. (The worker test below retries through a real broker, after a countdown.)
    webhook, secret = subscribe(world.acme, receiver.url)
    receiver.answer(500, 200)
    event = emit_and_commit(django_capture_on_commit_callbacks, world.acme)

    first, second = receiver.received
    assert verify(secret, first)["id"] == verify(secret, second)["id"] == str(event.uuid)
    assert first.body == second.body  # the same event, serialized the same way
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    assert delivery.attempts == 2 and delivery.status_code == 200 and delivery.delivered_at is not None
    assert delivery.next_attempt_at is None and delivery.last_error == ""


def test_an_endpoint_that_keeps_failing_is_tried_max_retries_plus_one_times_then_left(
        world, private_ok, eager, receiver, django_capture_on_commit_callbacks):
    webhook, secret = subscribe(world.acme, receiver.url)
    receiver.answer(503)
    event = emit_and_commit(django_capture_on_commit_callbacks, world.acme)

    assert len(receiver.received) == deliver_webhook.max_retries + 1 == 9
    assert {verify(secret, request)["id"] for request in receiver.received} == {str(event.uuid)}
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    assert delivery.attempts == 9 and delivery.status_code == 503 and delivery.last_error == "HTTP 503"
    assert delivery.delivered_at is None and delivery.next_attempt_at is None


def test_each_retry_waits_twice_as_long_as_the_one_before(world, private_ok, receiver):
    # Driven by hand: each call of `deliver` is one attempt; the task double records the countdown.
    webhook, _ = subscribe(world.acme, receiver.url)
    receiver.answer(500)
    event = webhooks.emit_event(organization=world.acme, type="invoice.issued", data={"invoice_id": "i-1"})
    delivery = WebhookDelivery.objects.get(webhook=webhook, event=event)
    task = RecordingTask(max_retries=4)
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    waits = []
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(4):
            with pytest.raises(RecordingTask.RetryRequested):
                webhooks.deliver(delivery.pk, task=task)
            delivery.refresh_from_db()
            waits.append(delivery.next_attempt_at - datetime.now(UTC))
            clock.shift(waits[-1])
        assert webhooks.deliver(delivery.pk, task=task) == 500  # the fifth and last: no retry asked

    assert task.countdowns == [30, 60, 120, 240]
    assert waits == [timedelta(seconds=s) for s in task.countdowns]
    delivery.refresh_from_db()
    assert delivery.attempts == 5 and delivery.next_attempt_at is None and len(receiver.received) == 5
    assert webhooks.retry_delay(1) == 30 and webhooks.retry_delay(20) == 3600  # capped at an hour


@pytest.mark.parametrize("answer", [302, 404, 500], ids=["redirect-not-followed", "404", "500"])
def test_any_answer_but_2xx_is_a_failed_attempt(world, private_ok, receiver, answer):
    webhook, _ = subscribe(world.acme, receiver.url)
    receiver.answer(answer, 200)
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    task = RecordingTask()
    with pytest.raises(RecordingTask.RetryRequested):
        webhooks.deliver(delivery.pk, task=task)
    delivery.refresh_from_db()
    assert delivery.status_code == answer and delivery.last_error == f"HTTP {answer}"
    assert delivery.delivered_at is None and delivery.attempts == 1
    assert [request.path for request in receiver.received] == ["/"]  # a redirect is not followed


def test_an_endpoint_that_refuses_connections_is_a_failed_attempt_retried_later(world, private_ok):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    webhook, _ = subscribe(world.acme, f"http://127.0.0.1:{port}/")
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    with pytest.raises(RecordingTask.RetryRequested):
        webhooks.deliver(delivery.pk, task=RecordingTask())
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.status_code is None and delivery.next_attempt_at is not None
    assert delivery.last_error.startswith("ConnectError")


def test_a_delivered_delivery_is_never_sent_again(world, private_ok, receiver):
    webhook, _ = subscribe(world.acme, receiver.url)
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    assert webhooks.deliver(delivery.pk, task=RecordingTask()) == 200
    assert webhooks.deliver(delivery.pk, task=RecordingTask()) == 200
    assert len(receiver.received) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 1


def test_a_host_that_turns_private_after_creation_is_refused_at_delivery(
        world, private_refused, receiver, fake_dns):
    # DNS rebinding: public when the webhook was made, the receiver's loopback address by the time
    # the event is sent.
    fake_dns["rebind.acme.example"] = ["93.184.215.14"]
    webhook, _ = subscribe(world.acme, f"http://rebind.acme.example:{receiver.port}/")
    fake_dns["rebind.acme.example"] = ["93.184.215.14", "127.0.0.1"]
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    task = RecordingTask()
    assert webhooks.deliver(delivery.pk, task=task) is None
    assert receiver.received == [] and task.countdowns == []  # not sent, and not retried
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.delivered_at is None and delivery.next_attempt_at is None
    assert delivery.last_error.startswith("refused:") and "127.0.0.1" in delivery.last_error


def test_the_request_goes_to_the_address_that_was_checked(world, private_refused, receiver, monkeypatch):
    """The check's answer is the one connected to: the HTTP client does not look the name up a
    second time (it could not here: only the check can resolve this name)."""
    monkeypatch.setattr(webhooks, "_resolve", lambda host, port: ["127.0.0.1"])
    monkeypatch.setattr(webhooks, "_is_forbidden", lambda address: False)  # pretend loopback is public
    webhook, secret = subscribe(world.acme, f"http://pinned.acme.example:{receiver.port}/in")
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    assert webhooks.deliver(delivery.pk, task=RecordingTask()) == 200
    [request] = receiver.received
    assert request.headers["Host"] == f"pinned.acme.example:{receiver.port}" and request.path == "/in"
    verify(secret, request)


def test_a_deleted_endpoint_gets_nothing_more(world, private_ok, receiver):
    webhook, _ = subscribe(world.acme, receiver.url)
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    webhooks.delete_webhook(actor=SYSTEM, webhook=webhook)
    assert webhooks.deliver(delivery.pk, task=RecordingTask()) is None
    assert receiver.received == []
    delivery.refresh_from_db()
    assert delivery.attempts == 0 and delivery.next_attempt_at is None and "deleted" in delivery.last_error


@pytest.mark.django_db(transaction=True)
def test_an_event_of_a_rolled_back_change_is_never_sent(private_ok, eager, receiver):
    organization = factories.make_organization("Rollback")
    subscribe(organization, receiver.url)

    class ChangeFailed(Exception):
        pass

    with pytest.raises(ChangeFailed), transaction.atomic():
        webhooks.emit_event(organization=organization, type="budget.exhausted", data={"budget_id": "b-1"})
        raise ChangeFailed
    assert receiver.received == [] and not WebhookEvent.objects.exists() and not WebhookDelivery.objects.exists()

    with transaction.atomic():  # the same change, committed this time
        event = webhooks.emit_event(organization=organization, type="budget.exhausted", data={"budget_id": "b-1"})
        assert receiver.received == []  # nothing leaves before the commit
    assert [json.loads(request.body)["id"] for request in receiver.received] == [str(event.uuid)]


# --- the delivery log ----------------------------------------------------------------------------

def test_alice_reads_the_delivery_log_of_her_endpoint(
        ram_world, private_ok, eager, receiver, django_capture_on_commit_callbacks, schema_validator):
    alice = client_for(ram_world.alice)
    created = alice.post("/api/v1/billing/webhooks", {"url": receiver.url, "events": ALL_EVENTS},
                         format="json").json()
    receiver.answer(500, 200)
    event = emit_and_commit(django_capture_on_commit_callbacks, ram_world.acme)
    response = alice.get(f"/api/v1/billing/webhooks/{created['id']}/deliveries")
    assert response.status_code == 200
    [item] = response.json()["items"]
    delivery = WebhookDelivery.objects.get()
    assert item["id"] == str(delivery.uuid) and item["event_id"] == str(event.uuid)
    assert item["type"] == "budget.threshold" and item["status_code"] == 200 and item["attempts"] == 2
    assert item["delivered_at"] is not None and item["next_attempt_at"] is None
    assert set(item) == {"id", "event_id", "type", "status_code", "attempts", "delivered_at", "next_attempt_at"}
    schema_validator("/api/v1/billing/webhooks/{webhook_id}/deliveries", "get", response.json())


def test_alice_deletes_her_endpoint_and_its_log_survives(ram_world, private_ok, receiver):
    alice = client_for(ram_world.alice)
    created = alice.post("/api/v1/billing/webhooks", {"url": receiver.url, "events": ALL_EVENTS},
                         format="json").json()
    webhooks.emit_event(organization=ram_world.acme, type="invoice.issued", data={})
    assert alice.delete(f"/api/v1/billing/webhooks/{created['id']}").status_code == 204
    assert alice.get("/api/v1/billing/webhooks").json() == {"items": [], "total": 0}
    assert alice.delete(f"/api/v1/billing/webhooks/{created['id']}").status_code == 404
    assert alice.get(f"/api/v1/billing/webhooks/{created['id']}/deliveries").status_code == 404
    webhook = Webhook.objects.get(uuid=created["id"])
    assert webhook.deleted_at is not None and webhook.deliveries.count() == 1
    assert AuditLog.objects.filter(action="webhook.delete", target_id=str(webhook.pk), actor=ram_world.alice).exists()


def test_charlie_never_sees_or_deletes_acmes_endpoints(ram_world, private_ok):
    webhook, _ = subscribe(ram_world.acme, "http://127.0.0.1:9/acme-secret-endpoint")
    webhooks.emit_event(organization=ram_world.acme, type="invoice.issued", data={})
    charlie = client_for(ram_world.charlie)
    listed = charlie.get("/api/v1/billing/webhooks")
    assert listed.status_code == 200 and listed.json() == {"items": [], "total": 0}
    assert charlie.get(f"/api/v1/billing/webhooks/{webhook.uuid}/deliveries").status_code == 404
    assert charlie.delete(f"/api/v1/billing/webhooks/{webhook.uuid}").status_code == 404
    webhook.refresh_from_db()
    assert webhook.deleted_at is None


def test_bob_who_only_reads_usage_may_not_subscribe_or_read_the_log(ram_world, private_ok):
    webhook, _ = subscribe(ram_world.acme, "http://127.0.0.1:9/hook")
    bob = client_for(ram_world.bob)
    refused = bob.post("/api/v1/billing/webhooks", {"url": "http://127.0.0.1:9/bob", "events": ALL_EVENTS},
                       format="json")
    assert refused.status_code == 403 and refused.json()["action"] == "billing:CreateWebhook"
    denied = bob.get(f"/api/v1/billing/webhooks/{webhook.uuid}/deliveries")
    assert denied.status_code == 403
    assert denied.json()["resource"] == f"acs:billing:*:{ram_world.acme.pk}:webhook/{webhook.pk}"


# --- the secret ----------------------------------------------------------------------------------

def test_the_secret_is_stored_encrypted_and_shown_nowhere_after_creation(
        ram_world, private_ok, eager, receiver, caplog, client, django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    alice = client_for(ram_world.alice)
    created = alice.post("/api/v1/billing/webhooks", {"url": receiver.url, "events": ALL_EVENTS},
                         format="json").json()
    secret = created["secret"]
    receiver.answer(500, 200)
    emit_and_commit(django_capture_on_commit_callbacks, ram_world.acme)
    signatures = [request.headers["X-Portal-Signature"].split("v1=")[1] for request in receiver.received]
    assert len(signatures) == 2

    webhook = Webhook.objects.get(uuid=created["id"])
    assert secret not in webhook.secret_encrypted and webhooks.decrypt_secret(webhook.secret_encrypted) == secret
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM billing_webhook")
        assert secret not in repr(cursor.fetchall())
    client.force_login(ram_world.alice.user)
    pages = [alice.get("/api/v1/billing/webhooks").content.decode(),
             alice.get(f"/api/v1/billing/webhooks/{created['id']}/deliveries").content.decode(),
             client.get(reverse("admin:billing_webhook_changelist")).content.decode(),
             client.get(reverse("admin:billing_webhook_change", args=[webhook.pk])).content.decode(),
             client.get(reverse("admin:billing_webhookdelivery_changelist")).content.decode()]
    assert created["id"] in pages[2] or receiver.url in pages[2]  # the admin does list the endpoint
    audit = [str(row.detail) for row in AuditLog.objects.all()]
    for text in [caplog.text, *pages, *audit]:
        assert secret not in text and webhook.secret_encrypted not in text
        assert all(signature not in text for signature in signatures)


def test_rotating_the_encryption_key_keeps_every_secret_readable(world, private_ok, settings):
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old_key]
    webhook, secret = subscribe(world.acme, "http://127.0.0.1:9/hook")
    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]  # the new key first; the old one still decrypts
    webhook.refresh_from_db()
    assert webhooks.decrypt_secret(webhook.secret_encrypted) == secret
    assert webhooks.reencrypt_webhook_secrets(actor=SYSTEM) == 1
    settings.FIELD_ENCRYPTION_KEY = [new_key]  # the old key retired
    webhook.refresh_from_db()
    assert webhooks.decrypt_secret(webhook.secret_encrypted) == secret
    settings.FIELD_ENCRYPTION_KEY = [old_key]
    with pytest.raises(InvalidToken):
        webhooks.decrypt_secret(webhook.secret_encrypted)


def test_a_secret_no_configured_key_can_read_is_not_sent_and_not_retried(world, private_ok, settings, receiver):
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]
    webhook, _ = subscribe(world.acme, receiver.url)
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]  # the old key lost, not rotated
    webhooks.emit_event(organization=world.acme, type="invoice.issued", data={})
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    task = RecordingTask()
    assert webhooks.deliver(delivery.pk, task=task) is None
    assert receiver.received == [] and task.countdowns == []
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.next_attempt_at is None
    assert "FIELD_ENCRYPTION_KEY" in delivery.last_error


# --- the admin -----------------------------------------------------------------------------------

def test_the_admin_shows_each_organization_its_own_endpoints_and_log_read_only(client, world, private_ok):
    acme_hook, _ = subscribe(world.acme, "http://127.0.0.1:9/acme-endpoint")
    globex_hook, _ = subscribe(world.globex, "http://127.0.0.1:9/globex-endpoint")
    for organization in (world.acme, world.globex):
        webhooks.emit_event(organization=organization, type="invoice.issued", data={"who": organization.name})
    client.force_login(world.alice.user)
    for name in ("webhook", "webhookevent", "webhookdelivery"):
        page = client.get(reverse(f"admin:billing_{name}_changelist"))
        assert page.status_code == 200
        text = page.content.decode()
        assert "globex-endpoint" not in text and "Globex" not in text, name
        assert client.get(reverse(f"admin:billing_{name}_add")).status_code == 403
    assert "acme-endpoint" in client.get(reverse("admin:billing_webhook_changelist")).content.decode()
    foreign = client.get(reverse("admin:billing_webhook_change", args=[globex_hook.pk]), follow=True)
    assert "globex-endpoint" not in foreign.content.decode()
    delivery = WebhookDelivery.objects.get(webhook=acme_hook)
    response = client.post(reverse("admin:billing_webhookdelivery_change", args=[delivery.pk]), {"attempts": 99})
    assert response.status_code == 403
    delivery.refresh_from_db()
    assert delivery.attempts == 0

    response = client.post(reverse("admin:billing_webhook_changelist"),
                           {"action": "delete_softly", "_selected_action": [acme_hook.pk, globex_hook.pk]})
    assert response.status_code == 302
    acme_hook.refresh_from_db()
    globex_hook.refresh_from_db()
    assert acme_hook.deleted_at is not None and globex_hook.deleted_at is None  # Globex's is not alice's to delete
    assert acme_hook.deliveries.count() == 1
    assert AuditLog.objects.filter(action="webhook.delete", target_id=str(acme_hook.pk), actor=world.alice).exists()


# --- through a real broker and worker -------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_worker_delivers_an_event_from_the_broker_retrying_after_a_500(
        private_ok, receiver, tmp_path, monkeypatch):
    """Through Redis when CELERY_BROKER_URL is set (else Kombu's file transport), to a worker
    subprocess on the test database. The event's deliveries are handed over on commit (captured
    here), published to a queue of this test's own, and the worker's `task.retry` re-publishes
    the failed attempt through the broker (after 1 s: WEBHOOK_RETRY_BASE_SECONDS in its env)."""
    broker = broker_for_test(tmp_path)
    organization = factories.make_organization("Worker")
    webhook, secret = subscribe(organization, receiver.url + "worker")
    receiver.answer(500, 200)
    handed_over: list[int] = []
    monkeypatch.setattr(webhooks, "_schedule", handed_over.append)
    with transaction.atomic():
        event = webhooks.emit_event(organization=organization, type="invoice.issued", data={"invoice_id": "w-1"})
        assert handed_over == []
    delivery = WebhookDelivery.objects.get(webhook=webhook)
    assert handed_over == [delivery.pk]

    queue = private_queue()
    log_path = tmp_path / "worker.log"
    with running_worker(broker, queue, log_path, {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
                                                  "WEBHOOK_RETRY_BASE_SECONDS": "1"}) as worker:
        broker.publish("billing.tasks.deliver_webhook", queue=queue, args=[delivery.pk])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and worker.poll() is None:
            delivery.refresh_from_db()
            if delivery.delivered_at is not None:
                break
            time.sleep(0.5)
    output = log_path.read_text()
    assert delivery.delivered_at is not None, output[-4000:]
    assert delivery.attempts == 2 and delivery.status_code == 200
    assert [verify(secret, request)["id"] for request in receiver.received] == [str(event.uuid)] * 2
    assert "billing.tasks.deliver_webhook" in output and "Retry in 1s" in output and "succeeded" in output
    assert secret not in output and all(r.headers["X-Portal-Signature"] not in output for r in receiver.received)


def test_deleting_twice_changes_nothing_the_second_time(world, private_ok):
    webhook, _ = subscribe(world.acme, "http://127.0.0.1:9/hook")
    webhooks.delete_webhook(actor=Actor(label="operator"), webhook=webhook)
    webhooks.delete_webhook(actor=Actor(label="operator"), webhook=webhook)  # a second delete changes nothing
    assert AuditLog.objects.filter(action="webhook.delete", target_id=str(webhook.pk)).count() == 1
