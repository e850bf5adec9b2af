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

Streams: the provider's stream is read by a task of its own, which hands each chunk to the
response as it arrives. If the client goes away (or the server cancels the response), that task
goes on reading to the provider's final usage chunk and meters it, bounded in time
(ORPHAN_READ_SECONDS) and in how many such reads a worker runs at once (MAX_ORPHAN_READS); past
either bound it stops and bills what it saw (the estimated prompt, the chunks received).

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

import httpx
import msgspec
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connections

from billing.budgets import budget_exhausted
from billing.money import to_units
from keys.hashing import SecretKind, hash_secret, kind_of
from keys.services import remembered_verification, verify_inference_key
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
from portal.gateway.ratelimits import RateLimiter, Window, storage_for
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
    sync code, the shared store, the rate limiter, the budget counters, the meter and its flusher."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.executor = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="gateway-sync")
        self.http = new_client()
        redis_url = settings.GATEWAY_REDIS_URL
        self.redis = aioredis.from_url(redis_url) if redis_url else None
        self.limiter = RateLimiter(storage_for(redis_url))
        self.reservations = Reservations(self.redis, lambda budget_id: self.run_sync(budget_spent_units, budget_id))
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
            await self.http.aclose()
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
    reported: bool = False

    @classmethod
    def of(cls, usage: Any) -> "Usage | None":
        if not isinstance(usage, dict):
            return None
        details = usage.get("prompt_tokens_details") or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        cached = min(int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0, prompt)
        return cls(prompt, int(usage.get("completion_tokens") or 0), cached, True)


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
            await self.rt.limiter.admit(self._windows(answer, facts), self.prompt_estimate + (max_tokens or 0))
            if answer.get("budget_exhausted"):
                raise GatewayError("budget_exceeded", "A hard budget over this key is exhausted for this period.")
            worst = rates.cost(prompt_tokens=self.prompt_estimate, cached_tokens=0,
                               completion_tokens=min(max_tokens or route.max_output_tokens, route.max_output_tokens),
                               image_count=0, video_seconds=0)
            try:
                self.reservation = await self.rt.reservations.reserve(facts.hard_budgets, to_units(worst.total))
            except BudgetExceeded as error:
                raise GatewayError("budget_exceeded",
                                   "This call could take a hard budget over this key past its amount.") from error
        except GatewayError as error:
            # A refusal of a known key and model is a call too: it is metered (no tokens), so the
            # dashboards' error rate sees it.
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            raise
        self.rates = rates
        self.windows = self._windows(answer, facts)
        self.charged_tokens = self.prompt_estimate + (max_tokens or 0)
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
                 "cached_tokens": usage.cached_tokens, "input_chars": getattr(self, "input_chars", 0),
                 "output_chars": output_chars, "latency_ms": latency_ms, "status_code": status,
                 "error_type": error_type}
        actual = 0
        rates = getattr(self, "rates", None)
        if rates is not None:
            actual = to_units(rates.cost(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens,
                                         completion_tokens=usage.completion_tokens, image_count=0,
                                         video_seconds=0).total)
            extra = usage.prompt_tokens + usage.completion_tokens - self.charged_tokens
            if extra > 0:
                self.rt.spawn(self.rt.limiter.add_tokens(self.windows, extra))
        await self.rt.meter.record(event, self.reservation, actual)

    def _unreported(self, output_pieces: int) -> Usage:
        # The provider never reported usage (the read was cut short): bill the estimated prompt
        # and one token per content piece received, rather than nothing.
        return Usage(self.prompt_estimate, output_pieces, 0, False)

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
                raw = await response.aread()
            finally:
                await response.aclose()
        except GatewayError as error:
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            return error.status, error.headers, error.body()
        except httpx.TimeoutException:
            error = GatewayError("upstream_timeout", "The model's provider did not answer in time.")
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            return error.status, [], error.body()
        except httpx.HTTPError:
            error = GatewayError("upstream_error", "The model's provider failed.")
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            return error.status, [], error.body()
        if response.status_code != 200:
            return await self._provider_refused(response.status_code, raw)
        try:
            completion = _decode(raw)
            completion["id"] = self.response_id
        except (msgspec.DecodeError, TypeError):
            error = GatewayError("upstream_error", "The model's provider answered something that is not JSON.")
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            return error.status, [], error.body()
        usage = Usage.of(completion.get("usage")) or self._unreported(0)
        output_chars = sum(len(((choice or {}).get("message") or {}).get("content") or "")
                           for choice in completion.get("choices") or [] if isinstance(choice, dict))
        await self._meter(200, None, usage, output_chars=output_chars)
        return 200, [], _encode(completion)

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
        queue: asyncio.Queue = asyncio.Queue()
        self.client_gone = False
        pump = self.rt.spawn(self._pump(body, queue))
        watcher = self.rt.spawn(self._watch_disconnect())
        try:
            kind, value = await queue.get()
            if kind == "error":
                status, headers, payload = value
                await self.send({"type": "http.response.start", "status": status,
                                 "headers": [*_JSON, (b"x-request-id", self.request_id.encode()), *headers]})
                await self.send({"type": "http.response.body", "body": payload})
                return
            await self.send({"type": "http.response.start", "status": 200,
                             "headers": [*_SSE, (b"x-request-id", self.request_id.encode())]})
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return  # the client left: the pump goes on alone
                kind, value = getter.result()
                last = kind == "end"
                await self.send({"type": "http.response.body", "body": value, "more_body": not last})
                if last:
                    return
        finally:
            if not pump.done():
                self.client_gone = True
            watcher.cancel()

    async def _watch_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def _pump(self, body: bytes, queue: asyncio.Queue) -> None:
        """Read the provider's stream to its end, handing chunks to the response while the client
        is there; meter the call before the response's last line is handed over."""
        try:
            response = await open_call(self.rt.http, self.route, body)
        except GatewayError as error:
            await self._meter(error.status, error.code, Usage(), output_chars=0)
            queue.put_nowait(("error", (error.status, error.headers, error.body())))
            return
        usage: Usage | None = None
        output_chars = pieces = 0
        orphaned_at: float | None = None
        counted_orphan = False
        try:
            if response.status_code != 200:
                raw = await response.aread()
                queue.put_nowait(("error", await self._provider_refused(response.status_code, raw)))
                return
            queue.put_nowait(("start", None))
            async for line in response.aiter_lines():
                if self.client_gone and orphaned_at is None:
                    orphaned_at = time.monotonic()
                    if self.rt.orphan_reads >= MAX_ORPHAN_READS:
                        break
                    self.rt.orphan_reads += 1
                    counted_orphan = True
                if orphaned_at is not None and time.monotonic() - orphaned_at > ORPHAN_READ_SECONDS:
                    break
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    chunk = _decode(data)
                except msgspec.DecodeError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                chunk["id"] = self.response_id
                reported = Usage.of(chunk.get("usage"))
                if reported is not None:
                    usage = reported
                for choice in chunk.get("choices") or ():
                    content = ((choice or {}).get("delta") or {}).get("content") if isinstance(choice, dict) else None
                    if content:
                        output_chars += len(content)
                        pieces += 1
                if not self.wants_usage:
                    if reported is not None and not chunk.get("choices"):
                        continue  # the usage chunk the caller did not ask for
                    chunk.pop("usage", None)
                if orphaned_at is None:
                    queue.put_nowait(("chunk", b"data: " + _encode(chunk) + b"\n\n"))
            complete = usage is not None
            await self._meter(200, None if complete else "stream_incomplete", usage or self._unreported(pieces),
                              output_chars=output_chars)
            queue.put_nowait(("end", _DONE))
        except (httpx.HTTPError, GatewayError) as error:
            # The stream broke after it started: the status line is sent, so the failure is an
            # error event in the stream (as OpenAI sends one), and the call is metered as 502/504.
            timeout = isinstance(error, httpx.TimeoutException)
            failure = GatewayError("upstream_timeout" if timeout else "upstream_error",
                                   "The model's provider stopped answering mid-stream.")
            await self._meter(failure.status, failure.code, usage or self._unreported(pieces),
                              output_chars=output_chars)
            queue.put_nowait(("end", b"data: " + failure.body() + b"\n\n"))
        finally:
            if counted_orphan:
                self.rt.orphan_reads -= 1
            await response.aclose()
