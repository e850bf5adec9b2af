"""The gateway's ASGI application (API.md §12): `POST /v1/chat/completions` and `GET /v1/models`,
mounted beside Django by portal.asgi (a plain ASGI app: Django's middleware, sessions and
templates have nothing to do on this path, and each sync middleware would cost a thread hop).

A call, in order: the key (401 invalid_api_key), the client address (403 ip_not_allowed), the
model (404 model_not_found, 403 model_not_allowed), the rate limits (429 rate_limit_exceeded), the
budget (402 budget_exceeded: an exhausted hard budget, or a reservation that would cross one).
Only then is the provider called, with the upstream's key. Every call that got as far as naming
a known model of a known key is metered, refused or not (portal.gateway.metering).

The hot path does no database query for a cached key: the key's verification comes from the
process memo of keys.services (half a second, then the shared cache), its facts and the routing
table from this process's memory (portal.gateway.catalog); Django's sync code runs in the
gateway's own threads when a memo is stale, never on the event loop.

Streams: the provider's stream is read by a task of its own, which writes each read's events to
the response as they arrive (as bytes: only content lengths and usage are decoded). If the
client goes away (or the server cancels the response), that task goes on reading to the
provider's final usage chunk and meters it, bounded in time (ORPHAN_READ_SECONDS) and in how
many such reads a worker runs at once (MAX_ORPHAN_READS); past either bound it stops and bills
what it saw (the estimated prompt, the chunks received).

Nothing here logs a prompt, a completion or a key.
"""

import asyncio
import functools
import ipaddress
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connections

from billing.budgets import budget_exhausted
from billing.money import to_units
from keys.hashing import SecretKind, hash_secret, kind_of
from keys.services import remembered_verification, verify_inference_key
from portal.gateway.admission import Admission, BudgetKnownExhausted
from portal.gateway.catalog import (
    KEY_FACTS_SECONDS,
    ROUTES_SECONDS,
    KeyFacts,
    Route,
    Routes,
    budget_spent_units,
    load_key_facts,
    load_routes,
)
from portal.gateway.errors import GatewayError
from portal.gateway.metering import Meter
from portal.gateway.ratelimits import Window
from portal.gateway.reservations import BudgetExceeded, Reservation, Reservations
from portal.gateway.upstream import new_client, open_call

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
ORPHAN_READ_SECONDS = 120.0
MAX_ORPHAN_READS = 64
SYNC_THREADS = 4
# On shutdown, calls still running (a stream, a read after the client left) get this long to end
# and be metered: under gunicorn's graceful_timeout (30 s, portal/gunicorn_conf.py), so the meter
# is drained before the worker is killed.
SHUTDOWN_WAIT_SECONDS = 20.0
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]\n\n"
_encode = msgspec.json.encode
_decode = msgspec.json.decode


def _run_closing_connections(function, *args, **kwargs):
    # The gateway's threads open database connections only on a stale memo or a metering batch;
    # closing them after each keeps no connection idle in a thread nobody reuses predictably.
    try:
        return function(*args, **kwargs)
    finally:
        connections.close_all()


class Runtime:
    """What one worker's event loop holds: the pooled HTTP client, the threads that run Django's
    sync code, the shared store, the admission (rate limits and budget counters), the meter and its flusher."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="gateway-sync")
        self.http = new_client()
        redis_url = settings.GATEWAY_REDIS_URL
        self.redis = aioredis.from_url(redis_url) if redis_url else None
        self.reservations = Reservations(self.redis, lambda budget_id: self.run_sync(budget_spent_units, budget_id))
        self.admission = Admission(self.redis, self.reservations)
        self.meter = Meter(self.redis, self.reservations, self.run_sync)
        self.flusher = self.loop.create_task(self.meter.run())
        self._routes: Routes | None = None
        self._routes_at = 0.0
        self._routes_refresh: asyncio.Task | None = None
        self._facts: dict[str, tuple[float, KeyFacts | None]] = {}
        self.orphan_reads = 0
        self.tasks: set[asyncio.Task] = set()
        self.trusted_proxies = [ipaddress.ip_network(n, strict=False) for n in settings.TRUSTED_PROXIES]

    async def run_sync(self, function, *args, **kwargs):
        return await self.loop.run_in_executor(
            self.executor, functools.partial(_run_closing_connections, function, *args, **kwargs))

    def spawn(self, coroutine) -> asyncio.Task:
        task = self.loop.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def routes(self) -> Routes:
        """The routing table; a stale one is refreshed in the background while it keeps serving."""
        if self._routes is None:
            self._routes, self._routes_at = await self.run_sync(load_routes), time.monotonic()
        elif time.monotonic() - self._routes_at > ROUTES_SECONDS and self._routes_refresh is None:
            self._routes_refresh = self.spawn(self._refresh_routes())
        return self._routes

    async def _refresh_routes(self) -> None:
        try:
            self._routes, self._routes_at = await self.run_sync(load_routes), time.monotonic()
        except Exception:
            logger.exception("the gateway's routing table could not be refreshed")
        finally:
            self._routes_refresh = None

    def forget_routes(self) -> None:
        self._routes = None

    async def key_facts(self, key_uuid: str) -> KeyFacts | None:
        remembered = self._facts.get(key_uuid)
        if remembered and remembered[0] > time.monotonic():
            return remembered[1]
        facts = await self.run_sync(load_key_facts, key_uuid)
        if len(self._facts) > 50_000:
            self._facts.clear()
        self._facts[key_uuid] = (time.monotonic() + KEY_FACTS_SECONDS, facts)
        return facts

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=SHUTDOWN_WAIT_SECONDS)
        self.flusher.cancel()
        try:
            await self.flusher
        except asyncio.CancelledError:
            pass
        try:
            await self.meter.drain()
        finally:
            await self.http.close()
            if self.redis is not None:
                await self.redis.aclose()
            self.executor.shutdown(wait=True)


_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}


def runtime() -> Runtime:
    """This loop's runtime (one per worker process; a test's server thread has its own loop)."""
    loop = asyncio.get_running_loop()
    current = _runtimes.get(loop)
    if current is None:
        current = _runtimes[loop] = Runtime()
    return current


async def shutdown() -> None:
    current = _runtimes.pop(asyncio.get_running_loop(), None)
    if current is not None:
        await current.close()


# --- the ASGI entry point ---------------------------------------------------------------------------

async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        return await _lifespan(receive, send)
    request_id = uuid.uuid4().hex
    try:
        path, method = scope["path"].rstrip("/"), scope["method"]
        if path == "/v1/chat/completions":
            if method != "POST":
                raise GatewayError("method_not_allowed", "Use POST for /v1/chat/completions.")
            return await ChatCall(runtime(), scope, receive, send, request_id).run()
        if path == "/v1/models":
            if method not in ("GET", "HEAD"):
                raise GatewayError("method_not_allowed", "Use GET for /v1/models.")
            return await _models(runtime(), scope, send, request_id)
        raise GatewayError("model_not_found" if path.startswith("/v1/models/") else "invalid_request_error",
                           f"Unknown path {path} (the gateway serves /v1/chat/completions and /v1/models).")
    except GatewayError as error:
        await _send_error(send, error, request_id)
    except Exception:
        # A fault of ours (the database unreachable, say): OpenAI's shape all the same, and the
        # traceback in the log by request id (tracebacks carry no request bodies or keys).
        logger.exception("gateway request %s failed", request_id)
        await _send_error(send, GatewayError("internal_error", "The gateway failed; try again."), request_id)


async def _lifespan(receive, send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            runtime()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_error(send, error: GatewayError, request_id: str) -> None:
    await send({"type": "http.response.start", "status": error.status,
                "headers": [*_JSON, (b"x-request-id", request_id.encode()), *error.headers]})
    await send({"type": "http.response.body", "body": error.body()})


# --- authentication, shared by both endpoints ---------------------------------------------------

def _header(scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


async def _verified_key(rt: Runtime, scope) -> dict:
    scheme, _, secret = _header(scope, b"authorization").decode("latin-1").partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or kind_of(secret) is not SecretKind.INFERENCE:
        raise GatewayError("invalid_api_key", "Missing or malformed API key: send Authorization: Bearer sk-...")
    answer = remembered_verification(hash_secret(secret))
    if answer is None:
        answer = await rt.run_sync(verify_inference_key, secret, budget_exhausted=budget_exhausted)
    if not answer.get("valid"):
        raise GatewayError("invalid_api_key", "Incorrect API key provided, or the key is disabled, expired or revoked.")
    return answer


def _client_address(rt: Runtime, scope) -> str:
    peer = (scope.get("client") or ("", 0))[0]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in rt.trusted_proxies)

    if not rt.trusted_proxies or not trusted(peer):
        return peer
    hops = [hop.strip() for hop in _header(scope, b"x-forwarded-for").decode("latin-1").split(",") if hop.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop
    return peer


def _check_address(rt: Runtime, scope, allowed: list[str]) -> None:
    if not allowed:
        return
    address = _client_address(rt, scope)
    try:
        ip = ipaddress.ip_address(address)
        if any(ip in ipaddress.ip_network(network, strict=False) for network in allowed):
            return
    except ValueError:
        pass
    raise GatewayError("ip_not_allowed", "This key may not be used from your address.")


def _may_call(answer: dict, facts: KeyFacts, model: str) -> bool:
    return all(not allowed or model in allowed
               for allowed in (answer.get("models_allowed") or (), facts.department_models, facts.plan_models or ()))


async def _models(rt: Runtime, scope, send, request_id: str) -> None:
    answer = await _verified_key(rt, scope)
    _check_address(rt, scope, answer.get("allowed_ips") or [])
    facts = await rt.key_facts(answer["key_id"])
    routes = await rt.routes()
    data = [{"id": route.model_code, "object": "model", "created": route.created, "owned_by": route.owned_by}
            for code, route in sorted(routes.by_model.items())
            if facts is not None and _may_call(answer, facts, code) and facts.rates(route) is not None]
    await send({"type": "http.response.start", "status": 200,
                "headers": [*_JSON, (b"x-request-id", request_id.encode())]})
    await send({"type": "http.response.body", "body": _encode({"object": "list", "data": data})})


# --- a chat completion -----------------------------------------------------------------------------

def _estimate_prompt_tokens(messages: list) -> tuple[int, int]:
    """(an upper estimate of the prompt's tokens, the prompt's characters), without a tokenizer:
    one token per two bytes of UTF-8 (English runs near four characters a token, Chinese near one
    per character, i.e. three bytes) plus OpenAI's few tokens of framing per message."""
    size = chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) if isinstance(part, dict) else str(part) for part in content)
        text = content if isinstance(content, str) else ("" if content is None else str(content))
        chars += len(text)
        size += len(text.encode())
    return math.ceil(size / 2) + 4 * len(messages) + 3, chars


def _positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise GatewayError("invalid_request_error", f"{name} must be a positive integer.", param=name)
    return value


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_creation_tokens: int = 0
    reported: bool = False

    @classmethod
    def of(cls, usage: Any) -> "Usage | None":
        """The provider's usage: OpenAI's (`prompt_tokens`, `prompt_tokens_details.cached_tokens`),
        with the `cache_creation_input_tokens` Anthropic-compatible providers add beside it, or
        Anthropic's own (`input_tokens` without the cache reads and writes, which it counts apart)."""
        if not isinstance(usage, dict):
            return None
        creation = _count(usage.get("cache_creation_input_tokens"))
        if "prompt_tokens" not in usage and "input_tokens" in usage:
            cached = _count(usage.get("cache_read_input_tokens"))
            prompt = _count(usage.get("input_tokens")) + cached + creation
            return cls(prompt, _count(usage.get("output_tokens")), cached, creation, True)
        details = usage.get("prompt_tokens_details")
        prompt = _count(usage.get("prompt_tokens"))
        cached = min(_count(details.get("cached_tokens")) if isinstance(details, dict) else 0, prompt)
        # The ingestion path refuses cached + written above the prompt: a provider saying so is
        # believed up to the prompt it reported.
        return cls(prompt, _count(usage.get("completion_tokens")), cached, min(creation, prompt - cached), True)


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


# What the gateway reads of a provider's answer, decoded straight from the bytes (everything
# else in them is passed through untouched, never decoded into Python objects).
class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None


class _Answer(msgspec.Struct):
    id: Any = None
    choices: list[_Choice] | None = None
    usage: Any = None


_read_answer = msgspec.json.Decoder(_Answer).decode
_NULL_USAGE = (b',"usage":null', b', "usage": null')


@dataclass
class ChatCall:
    rt: Runtime
    scope: dict
    receive: Any
    send: Any
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    answer: dict | None = None
    route: Route | None = None
    reservation: Reservation | None = None
    metered: bool = False
    ratelimit_headers: list = field(default_factory=list)

    @property
    def response_id(self) -> str:
        return f"chatcmpl-{self.request_id}"

    async def run(self) -> None:
        body = await self._read_body()
        self.answer = answer = await _verified_key(self.rt, self.scope)
        _check_address(self.rt, self.scope, answer.get("allowed_ips") or [])
        request = self._parse(body)
        model = request["model"]
        route = (await self.rt.routes()).by_model.get(model)
        facts = await self.rt.key_facts(answer["key_id"])
        if route is None or facts is None:
            raise GatewayError("model_not_found", f"The model `{model}` does not exist or is not served.",
                               param="model")
        self.route, self.facts = route, facts
        rates = facts.rates(route)
        try:
            if not _may_call(answer, facts, model):
                raise GatewayError("model_not_allowed", f"This key may not call the model `{model}`.", param="model")
            if rates is None:
                raise GatewayError("model_not_found", f"The model `{model}` has no price in your account's currency.",
                                   param="model")
            self.prompt_estimate, self.input_chars = _estimate_prompt_tokens(request["messages"])
            max_tokens = _positive_int(request, "max_completion_tokens") or _positive_int(request, "max_tokens")
            windows = self._windows(answer, facts)
            charged_tokens = self.prompt_estimate + (max_tokens or 0)
            worst = (rates.cost(prompt_tokens=self.prompt_estimate, cached_tokens=0,
                                completion_tokens=min(max_tokens or route.max_output_tokens, route.max_output_tokens),
                                image_count=0, video_seconds=0) if facts.hard_budgets else None)
            try:
                # The rate limits and the budget reservation in one step (one Redis round trip).
                admitted = await self.rt.admission.admit(
                    windows, charged_tokens, facts.hard_budgets, to_units(worst.total) if worst else 0,
                    budget_exhausted=bool(answer.get("budget_exhausted")))
            except BudgetKnownExhausted as error:
                raise GatewayError("budget_exceeded",
                                   "A hard budget over this key is exhausted for this period.") from error
            except BudgetExceeded as error:
                raise GatewayError("budget_exceeded",
                                   "This call could take a hard budget over this key past its amount.") from error
            self.reservation = admitted.reservation
            self.ratelimit_headers = admitted.headers
        except GatewayError as error:
            # A refusal of a known key and model is a call too: it is metered (no tokens), so the
            # dashboards' error rate sees it.
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            raise
        self.rates = rates
        self.windows = windows
        self.charged_tokens = charged_tokens
        if request.get("stream") is True:
            await self._stream(request, body)
        else:
            await self._complete(body)

    async def _read_body(self) -> bytes:
        chunks, size = [], 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise GatewayError("invalid_request_error", "The client went away before sending its request.")
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY_BYTES:
                raise GatewayError("invalid_request_error", "The request body is too large.")
            if not message.get("more_body"):
                return b"".join(chunks)

    def _parse(self, body: bytes) -> dict:
        try:
            request = _decode(body)
        except msgspec.DecodeError as error:
            raise GatewayError("invalid_request_error", "The body is not valid JSON.") from error
        if not isinstance(request, dict):
            raise GatewayError("invalid_request_error", "The body must be a JSON object.")
        if not isinstance(request.get("model"), str) or not request["model"]:
            raise GatewayError("invalid_request_error", "model is required (a model id string).", param="model")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise GatewayError("invalid_request_error", "messages must be a non-empty array of message objects.",
                               param="messages")
        if "stream" in request and request["stream"] is not None and not isinstance(request["stream"], bool):
            raise GatewayError("invalid_request_error", "stream must be a boolean.", param="stream")
        options = request.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise GatewayError("invalid_request_error", "stream_options must be an object.", param="stream_options")
        return request

    @staticmethod
    def _windows(answer: dict, facts: KeyFacts) -> list[Window]:
        windows = []
        for subject, rpm, tpm in ((f"key:{answer['key_id']}", answer.get("rpm_limit"), answer.get("tpm_limit")),
                                  (f"department:{facts.department_id}", facts.department_rpm, facts.department_tpm),
                                  (f"plan:{facts.organization_id}", facts.plan_rpm, facts.plan_tpm)):
            if rpm:
                windows.append(Window("requests", subject, rpm))
            if tpm:
                windows.append(Window("tokens", subject, tpm))
        return windows

    # --- metering ----------------------------------------------------------------------------------

    async def _meter(self, status: int, error_type: str | None, usage: Usage, *, output_chars: int) -> None:
        """Hand the call's one event over (once), settling its reservation to the real cost."""
        if self.metered:
            return
        self.metered = True
        latency_ms = int((time.perf_counter() - self.started) * 1000)
        event = {"request_id": self.request_id, "timestamp": self.started_at.isoformat(),
                 "key_id": self.answer["key_id"], "model": self.route.model_code,
                 "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                 "cached_tokens": usage.cached_tokens, "cache_creation_tokens": usage.cache_creation_tokens,
                 "input_chars": getattr(self, "input_chars", 0),
                 "output_chars": output_chars, "latency_ms": latency_ms, "status_code": status,
                 "error_type": error_type}
        actual = 0
        extra_tokens = None
        rates = getattr(self, "rates", None)
        if rates is not None:
            if self.reservation is not None:  # the real cost only settles a reservation
                actual = to_units(rates.cost(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                                             cache_creation_tokens=usage.cache_creation_tokens,
                                             completion_tokens=usage.completion_tokens, image_count=0,
                                             video_seconds=0).total)
            extra = usage.prompt_tokens + usage.completion_tokens - self.charged_tokens
            counters = [window.counter for window in self.windows if window.kind == "tokens"]
            if extra > 0 and counters:
                if self.rt.redis is None:
                    self.rt.admission.extra_tokens_in_memory(self.windows, extra)
                else:
                    extra_tokens = (counters, extra)
        await self.rt.meter.record(event, self.reservation, actual, extra_tokens)

    def _unreported(self, output_pieces: int) -> Usage:
        # The provider never reported usage (the read was cut short): bill the estimated prompt
        # and one token per content piece received, rather than nothing.
        return Usage(self.prompt_estimate, output_pieces)

    def _with_our_id(self, raw: bytes, provider_id: Any) -> bytes | None:
        """The provider's JSON with its id replaced by ours, as bytes (None: not found as a plain
        string, decode and encode instead). A JSON string's quotes cannot occur unescaped inside
        another string, so the quoted id is found only where it is a value; the id comes first."""
        if not isinstance(provider_id, str):
            return None
        needle = _encode(provider_id)
        if needle not in raw:
            return None
        return raw.replace(needle, self.response_id_json, 1)

    @functools.cached_property
    def response_id_json(self) -> bytes:
        return _encode(self.response_id)

    # --- plain -------------------------------------------------------------------------------------

    async def _complete(self, body: bytes) -> None:
        # The call runs in its own task: if this response is cancelled, the call still ends and
        # is metered.
        status, headers, payload = await asyncio.shield(self.rt.spawn(self._call_plain(body)))
        await self.send({"type": "http.response.start", "status": status,
                         "headers": [*_JSON, (b"x-request-id", self.request_id.encode()), *headers]})
        await self.send({"type": "http.response.body", "body": payload})

    async def _call_plain(self, body: bytes) -> tuple[int, list, bytes]:
        try:
            response = await open_call(self.rt.http, self.route, body)
            try:
                raw = await response.read()
            finally:
                response.close()
        except GatewayError as error:
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            return error.status, error.headers, error.body()
        if response.status_code != 200:
            return await self._provider_refused(response.status_code, raw)
        try:
            answer = _read_answer(raw)
            payload = self._with_our_id(raw, answer.id)
            if payload is None:
                completion = _decode(raw)
                completion["id"] = self.response_id
                payload = _encode(completion)
        except (msgspec.DecodeError, TypeError):
            error = GatewayError("upstream_error", "The model's provider answered something that is not JSON.")
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            return error.status, [], error.body()
        usage = Usage.of(answer.usage) or self._unreported(0)
        output_chars = sum(len(choice.message.content or "") for choice in answer.choices or ()
                           if choice.message is not None)
        await self._meter(200, None, usage, output_chars=output_chars)
        return 200, self.ratelimit_headers, payload

    async def _provider_refused(self, status: int, raw: bytes) -> tuple[int, list, bytes]:
        """A provider's 4xx about the request itself (400, 404, 413, 422) is the caller's to see, in
        the provider's own (OpenAI) words; anything else is the provider failing: 502."""
        if status in (400, 404, 413, 422):
            await self._meter(status, "upstream_rejected", Usage(), output_chars=0)
            return status, [], raw
        error = GatewayError("upstream_error", f"The model's provider failed (HTTP {status}).")
        await self._meter(error.status, error.code, Usage(), output_chars=0)
        return error.status, [], error.body()

    # --- streaming ---------------------------------------------------------------------------------

    async def _stream(self, request: dict, body: bytes) -> None:
        options = request.get("stream_options") or {}
        self.wants_usage = bool(options.get("include_usage"))
        if not self.wants_usage:
            # The gateway always asks for the usage chunk: it is what gets billed. The caller who
            # did not ask never sees it.
            request["stream_options"] = {**options, "include_usage": True}
            body = _encode(request)
        self.client_gone = False
        # The pump reads the provider and writes the response itself, in a task of its own: if
        # the client leaves (or this response is cancelled), it reads on alone to the usage.
        pump = self.rt.spawn(self._pump(body))
        watcher = self.rt.spawn(self._watch_disconnect())
        try:
            await asyncio.wait({pump, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():
                self.client_gone = True
            watcher.cancel()

    async def _watch_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass
        self.client_gone = True

    async def _send(self, message: dict) -> None:
        if not self.client_gone:
            await self.send(message)

    async def _send_plain(self, status: int, headers: list, payload: bytes) -> None:
        await self._send({"type": "http.response.start", "status": status,
                          "headers": [*_JSON, (b"x-request-id", self.request_id.encode()), *headers]})
        await self._send({"type": "http.response.body", "body": payload})

    def _event(self, data: bytes, reading: "_StreamReading") -> bytes | None:
        """One provider event's data, as the caller gets it (None: not for the caller). Only what
        is needed is decoded (content lengths, usage); the bytes pass through with our id."""
        try:
            chunk = _read_answer(data)
        except msgspec.DecodeError:
            return None
        for choice in chunk.choices or ():
            content = choice.delta.content if choice.delta is not None else None
            if content:
                reading.output_chars += len(content)
                reading.pieces += 1
        reported = Usage.of(chunk.usage)
        if reported is not None:
            reading.usage = reported
        if not self.wants_usage:
            if reported is not None and not chunk.choices:
                return None  # the usage chunk the caller did not ask for
            if chunk.usage is None:
                for null_usage in _NULL_USAGE:
                    data = data.replace(null_usage, b"", 1)
                if b'"usage"' in data:
                    return self._reencoded(data)
            else:
                return self._reencoded(data)
        replaced = self._with_our_id(data, chunk.id)
        return replaced if replaced is not None else self._reencoded(data)

    def _reencoded(self, data: bytes) -> bytes | None:
        # The slow path, for what the byte-level one cannot do exactly (an odd layout).
        try:
            chunk = _decode(data)
        except msgspec.DecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        chunk["id"] = self.response_id
        if not self.wants_usage:
            chunk.pop("usage", None)
        return _encode(chunk)

    async def _pump(self, body: bytes) -> None:
        """Read the provider's stream to its end, passing its events on as each read of the
        provider delivers them while the client is there; meter the call before the response's
        last line is handed over."""
        try:
            response = await open_call(self.rt.http, self.route, body)
        except GatewayError as error:
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            await self._send_plain(error.status, error.headers, error.body())
            return
        reading = _StreamReading()
        orphaned_at: float | None = None
        counted_orphan = False
        try:
            if response.status_code != 200:
                raw = await response.read()
                await self._send_plain(*await self._provider_refused(response.status_code, raw))
                return
            await self._send({"type": "http.response.start", "status": 200,
                              "headers": [*_SSE, (b"x-request-id", self.request_id.encode()),
                                          *self.ratelimit_headers]})
            pending = b""
            done = False
            async for received in response.chunks():
                if self.client_gone and orphaned_at is None:
                    orphaned_at = time.monotonic()
                    if self.rt.orphan_reads >= MAX_ORPHAN_READS:
                        break
                    self.rt.orphan_reads += 1
                    counted_orphan = True
                if orphaned_at is not None and time.monotonic() - orphaned_at > ORPHAN_READ_SECONDS:
                    break
                if done:
                    # Read past [DONE] to the response's end: a response closed before its end
                    # cannot go back to the pool, and every next call would open a connection.
                    continue
                pending += received
                if b"\r" in pending:
                    pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                *events, pending = pending.split(b"\n\n")
                out = []
                for event in events:
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue  # comments, event names: not OpenAI's chunks
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            done = True
                            break
                        passed = self._event(data, reading)
                        if passed is not None:
                            out.append(b"data: " + passed + b"\n\n")
                    if done:
                        break
                if out and orphaned_at is None:
                    await self._send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            usage = reading.usage
            await self._meter(200, None if usage is not None else "stream_incomplete",
                              usage or self._unreported(reading.pieces), output_chars=reading.output_chars)
            await self._send({"type": "http.response.body", "body": _DONE, "more_body": False})
        except GatewayError as error:
            # The stream broke after it started: the status line is sent, so the failure is an
            # error event in the stream (as OpenAI sends one), and the call is metered as 502/504.
            failure = GatewayError(error.code if error.code == "upstream_timeout" else "upstream_error",
                                   "The model's provider stopped answering mid-stream.")
            await self._meter(failure.status, failure.code, reading.usage or self._unreported(reading.pieces),
                              output_chars=reading.output_chars)
            await self._send({"type": "http.response.body", "body": b"data: " + failure.body() + b"\n\n",
                              "more_body": False})
        finally:
            if counted_orphan:
                self.rt.orphan_reads -= 1
            response.close()


@dataclass(slots=True)
class _StreamReading:
    """What a stream's pump has learnt so far."""

    usage: Usage | None = None
    output_chars: int = 0
    pieces: int = 0
