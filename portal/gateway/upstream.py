"""Calling an upstream (API.md §12): its own key, never the customer's; retries with exponential
backoff and jitter on 5xx answers and connection failures only (a timeout is not retried: a
provider that hangs would only hang again, and the caller has waited long enough); the read
timeout is the upstream's timeout_seconds, between any two bytes."""

import asyncio
import random

import httpx

from portal.gateway.catalog import Route
from portal.gateway.errors import GatewayError

BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
KEEPALIVE = 40  # idle connections kept per worker: a worker's usual concurrency (32 streams) and a margin
_CONNECTION_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError,
                        httpx.WriteError)


def new_client() -> httpx.AsyncClient:
    # One pooled client per worker (portal.gateway.app.Runtime): connections to an upstream are
    # kept alive between calls, which is most of what the gateway adds to a call's latency. Few
    # idle ones are kept: httpcore scans every pooled connection (a poll() each for the idle ones)
    # on every request, and 200 kept-alive connections cost ~20 % of a worker's CPU under 32
    # concurrent callers (bench/RESULTS.md, 2026-12-06 gwperf); more callers than that still get
    # connections, only not kept after their call.
    return httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=KEEPALIVE,
                                                 keepalive_expiry=30), follow_redirects=False)


def _backoff(attempt: int) -> float:
    return min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt) * random.uniform(0.5, 1.0)


async def open_call(http: httpx.AsyncClient, route: Route, body: bytes) -> httpx.Response:
    """The upstream's answer with its body not yet read (the caller streams it and closes it).
    Raises GatewayError upstream_error (502) or upstream_timeout (504)."""
    timeout = httpx.Timeout(route.timeout_seconds, connect=min(route.timeout_seconds, 10.0))
    headers = {"authorization": f"Bearer {route.api_key}", "content-type": "application/json",
               "accept": "application/json, text/event-stream"}
    url = route.base_url + "/chat/completions"
    for attempt in range(route.max_retries + 1):
        last = attempt == route.max_retries
        try:
            response = await http.send(http.build_request("POST", url, content=body, headers=headers,
                                                          timeout=timeout), stream=True)
        except (httpx.ReadTimeout, httpx.PoolTimeout, httpx.WriteTimeout) as error:
            raise GatewayError("upstream_timeout", "The model's provider did not answer in time.") from error
        except _CONNECTION_FAILURES as error:
            if last:
                raise GatewayError("upstream_error", "The model's provider could not be reached.") from error
        else:
            if response.status_code < 500 or last:
                return response
            await response.aclose()
        await asyncio.sleep(_backoff(attempt))
    raise AssertionError("unreachable")  # the last attempt returns or raises
