"""Server time of POST /api/v1/gateway/keys/verify, cache hit and cache miss.

Measured in-process through Django's full request stack (middleware, authentication, RAM,
the view), so the figure is server time without the network. Run: `make bench`."""

import time

from tqdm import tqdm

from bench.django_env import summarize, throwaway_database

ROUNDS = 2000


def main() -> None:
    with throwaway_database("verify"):
        from django.core.cache import cache
        from django.db import connection
        from django.test import Client

        from keys import services
        from portal.services import SYSTEM
        from tests import factories

        organization = factories.make_organization("Bench")
        department = factories.make_department(organization, "Bench team")
        _, secret = factories.make_inference_key(department)
        token = services.create_service_token(actor=SYSTEM, name="bench").secret
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
        body, kind = f'{{"key": "{secret}"}}', "application/json"
        print(f"database: {connection.vendor}; cache: {cache.__class__.__name__}")

        from keys.services import forget_verification_memo

        def timed(label: str, forget_memo: bool = False, clear_cache: bool = False) -> list[int]:
            samples = []
            for _ in tqdm(range(ROUNDS), desc=label, leave=False):
                if forget_memo:
                    forget_verification_memo()
                if clear_cache:
                    cache.clear()
                response = client.post("/api/v1/gateway/keys/verify", body, content_type=kind)
                assert response.status_code == 200 and response.json()["valid"]
                # The server's own figure (portal.middleware.ServerTimingMiddleware), in ms.
                server_ms = float(response["Server-Timing"].split("dur=")[1])
                samples.append(int(server_ms * 1_000_000))
            return samples

        timed("warm-up")  # imports, connections and caches
        print(summarize("verify, process memo hit (server time)", timed("memo hit")))
        print(summarize("verify, shared cache hit (server time)", timed("cache hit", forget_memo=True)))
        print(summarize("verify, miss: database (server time)",
                        timed("miss", forget_memo=True, clear_cache=True)))

        from billing.budgets import budget_exhausted
        from keys.services import verify_inference_key

        cache.clear()
        verify_inference_key(secret, budget_exhausted=budget_exhausted)
        samples = []
        for _ in range(ROUNDS * 5):
            started = time.perf_counter_ns()
            verify_inference_key(secret, budget_exhausted=budget_exhausted)
            samples.append(time.perf_counter_ns() - started)
        print(summarize("verify_inference_key() alone, cache hit", samples))


if __name__ == "__main__":
    main()
