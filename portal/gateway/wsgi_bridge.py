"""The gateway under a WSGI server, for development (API.md §12: `python manage.py runserver`
serves the gateway). Production serves it as ASGI (portal.asgi, `make serve-prod`).

Django's development server is WSGI and runs each request in a thread of its own; the gateway is
an ASGI app that keeps a pooled client, a meter and its flusher on one event loop. So this bridge
keeps one event loop per process in a background thread, runs each `/v1/` request there as an
ASGI call, and streams what the app sends back through a thread-safe queue. A client that goes
away is told to the app as `http.disconnect`, as an ASGI server would. Events not yet flushed
when the development server stops are lost (production hands them over through Redis first).
"""

import asyncio
import queue
import threading

from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from portal.gateway.app import application

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()
_FINISHED = object()


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="gateway-loop", daemon=True).start()
        return _loop


@csrf_exempt
def gateway_view(request: HttpRequest) -> StreamingHttpResponse | JsonResponse:
    loop = _background_loop()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
        "scheme": request.scheme, "path": request.path, "raw_path": request.path.encode(),
        "query_string": request.META.get("QUERY_STRING", "").encode(),
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in request.headers.items()],
        "client": (request.META.get("REMOTE_ADDR", ""), 0), "server": (request.get_host(), 0),
    }
    body = request.body
    outbox: queue.Queue = queue.Queue()
    client_gone = asyncio.Event()
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        outbox.put(message)

    future = asyncio.run_coroutine_threadsafe(application(scope, receive, send), loop)
    future.add_done_callback(lambda _done: outbox.put(_FINISHED))
    start = outbox.get()
    if start is _FINISHED:
        future.result()  # the app failed before answering: let Django show it
        return JsonResponse({"error": {"message": "The gateway did not answer.", "type": "api_error",
                                       "code": None, "param": None}}, status=500)

    def body_parts():
        try:
            while (message := outbox.get()) is not _FINISHED:
                yield message.get("body", b"")
                if not message.get("more_body"):
                    return
        finally:
            loop.call_soon_threadsafe(client_gone.set)

    response = StreamingHttpResponse(body_parts(), status=start["status"])
    for name, value in start.get("headers", []):
        response[name.decode("latin-1")] = value.decode("latin-1")
    return response
