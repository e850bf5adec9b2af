"""Server-Timing: every response says how long the server spent on it (`app;dur=<ms>`), so
clients, load tests and benchmarks read server time without network noise."""

import time


class ServerTimingMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        response["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.3f}"
        return response
