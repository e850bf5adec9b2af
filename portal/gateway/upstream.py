"""Calling an upstream (API.md §12): its own key, never the customer's; retries with exponential
backoff and jitter on 5xx answers and connection failures only (a read timeout is not retried: a
provider that hangs would only hang again, and the caller has waited long enough); the read
timeout is the upstream's timeout_seconds, between any two bytes. Every failure of the upstream,
when the call opens or while its body is read, is a GatewayError: upstream_error (502) or
upstream_timeout (504).

Why aiohttp and not httpx (the gateway's first client): per upstream call, measured in one
process against the stand-in provider (2026-12-06, bench/RESULTS.md), httpx cost 1.0 ms of CPU
sequentially and 2.0 ms with 32 calls in flight (plain; 1.4 and 2.7 ms streamed), httpcore alone
0.7 and 2.0 ms, aiohttp 0.24 and 0.19 ms (0.43 and 0.34 ms streamed). httpx's layers (its
request and response models, anyio's stream wrappers, h11 in pure Python) and httpcore's scan of
every pooled connection on every request were the largest part of what a gateway worker spent
per call; aiohttp parses HTTP in C (llhttp) and takes an idle connection from a per-host deque. It
keeps what the gateway needs: connection pooling with keep-alive, connect and between-bytes read
timeouts, and the body read as it arrives (streams pass through chunk by chunk, never buffered
whole). Retries are ours (below), as they were with httpx.
"""

import asyncio
import functools
import random
from collections.abc import AsyncIterator

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from portal.gateway.catalog import Route
from portal.gateway.errors import GatewayError

BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
MAX_CONNECTIONS = 1000
KEEPALIVE_SECONDS = 30
_NOT_IN_TIME = "The model's provider did not answer in time."


def new_client() -> aiohttp.ClientSession:
    # One pooled session per worker (portal.gateway.app.Runtime), made on the worker's event loop:
    # connections to an upstream are kept alive between calls, which is most of what the gateway
    # adds to a call's latency. The body is decompressed as it arrives (what the caller gets has
    # no content-encoding of the provider's); the gateway follows no redirects and keeps no
    # cookies. HTTP(S)_PROXY and NO_PROXY are honoured as httpx did, by _proxy_for.
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


@functools.lru_cache(maxsize=1024)
def _proxy_for(base_url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The environment's proxy for an upstream (HTTP(S)_PROXY, NO_PROXY), as aiohttp's trust_env
    finds it, but once per upstream URL and process: trust_env reads the environment again on
    every request, 63 µs a call (a third of the rest of aiohttp's cost)."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(base_url))
    except LookupError:
        return None, None
    return str(proxy), auth


def _backoff(attempt: int) -> float:
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt) * random.uniform(0.5, 1.0)


def _failure(error: BaseException) -> GatewayError:
    """What a client error means to the caller: a read that timed out is 504, the rest 502."""
    if isinstance(error, TimeoutError) and not isinstance(error, aiohttp.ConnectionTimeoutError):
        return GatewayError("upstream_timeout", _NOT_IN_TIME)
    return GatewayError("upstream_error", "The model's provider failed.")


class UpstreamResponse:
    """The upstream's answer, its body not yet read: read it whole (`read`) or as it arrives
    (`chunks`), then `close` it (the connection goes back to the pool when the body was read to
    its end, and is dropped otherwise)."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            raise _failure(error) from error

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as error:
            raise _failure(error) from error

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


async def open_call(http: aiohttp.ClientSession, route: Route, body: bytes) -> UpstreamResponse:
    """The upstream's answer with its body not yet read (the caller reads it and closes it).
    Raises GatewayError upstream_error (502) or upstream_timeout (504)."""
    connect = min(route.timeout_seconds, 10.0)
    # connect: waiting for a pooled connection and opening one; sock_read: between any two bytes.
    timeout = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=route.timeout_seconds)
    headers = {"authorization": f"Bearer {route.api_key}", "content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    url = route.base_url + "/chat/completions"
    proxy, proxy_auth = _proxy_for(route.base_url)
    for attempt in range(route.max_retries + 1):
        last = attempt == route.max_retries
        try:
            response = await http.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False,
                                       proxy=proxy, proxy_auth=proxy_auth)
        except (TimeoutError, aiohttp.ClientError) as error:
            failure = _failure(error)
            # Connection failures (refused, reset, closed before an answer, or not connected in
            # time) are retried; a provider that took the request and never answered is not.
            if failure.code == "upstream_timeout" or last:
                raise failure from error
        else:
            if response.status < 500 or last:
                return UpstreamResponse(response)
            response.release()
        await asyncio.sleep(_backoff(attempt))
    raise AssertionError("unreachable")  # the last attempt returns or raises
