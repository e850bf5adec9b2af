"""How far a hard budget is overshot when several gateway writers spend against it at once.

Each writer is a thread with its own database connection that does what the gateway does for
each batch of calls: verify its key (`budget_exhausted` from the verify path, with its caches),
and while the key may still spend, record a batch of usage through `record_usage` (ingestion,
charges and the hard-limit check in one transaction). The budget is reached by one batch; the
writers whose batches were already under way when that batch committed still land theirs.
Printed: the amount, what was spent, the overshoot in money and in events, and the bound
(writers × batch cost, the crossing batch included). Run on PostgreSQL:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.billing_overshoot --writers 4
"""

import argparse
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from tqdm import tqdm

from bench.django_env import throwaway_database

EVENT_COST = Decimal("0.002")  # the factories' default event at the test model's prices


@dataclass
class Writer:
    batches: list[tuple[float, int, Decimal]] = field(default_factory=list)  # (commit time, events, cost)
    stopped_at: float | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100, help="events per batch (the gateway sends up to 1000)")
    parser.add_argument("--amount", type=Decimal, default=Decimal("20"), help="the hard budget, CNY")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with throwaway_database("overshoot"):
        from django.db import connection

        print(f"database: {connection.vendor}; {args.writers} writers × {args.batch}-event batches "
              f"({args.batch * EVENT_COST} CNY each) against a {args.amount} CNY hard budget")
        for run in range(1, args.runs + 1):
            _one_run(run, args)


def _one_run(run: int, args) -> None:
    from django.db import close_old_connections, connection
    from django.utils import timezone

    from billing.budgets import budget_exhausted, create_budget
    from billing.models import Budget
    from billing.services import record_usage
    from keys.services import verify_inference_key
    from portal.services import SYSTEM
    from tests import factories

    organization = factories.make_organization(f"Overshoot {run}")
    department = factories.make_department(organization, "Spenders")
    model = factories.make_model()
    keys = [factories.make_inference_key(department) for _ in range(args.writers)]
    budget = create_budget(actor=SYSTEM, organization=organization, scope=Budget.Scope.DEPARTMENT,
                           department=department, amount=args.amount, hard_limit=True)
    start = timezone.now() - timedelta(minutes=5)
    writers = [Writer() for _ in keys]
    progress = tqdm(total=int(args.amount / (EVENT_COST * args.batch)) + 1, desc=f"run {run}", unit="batch",
                    leave=False)
    go = threading.Event()

    def spend(index: int) -> None:
        key, secret = keys[index]
        sequence = 0
        go.wait()
        try:
            while True:
                if verify_inference_key(secret, budget_exhausted=budget_exhausted)["budget_exhausted"]:
                    writers[index].stopped_at = time.monotonic()
                    return
                events = [factories.event(key, model, request_id=f"r{run}-w{index}-{sequence}-{i}",
                                          timestamp=(start + timedelta(milliseconds=sequence)).isoformat())
                          for i in range(args.batch)]
                sequence += 1
                accepted = record_usage(events).accepted
                writers[index].batches.append((time.monotonic(), accepted, accepted * EVENT_COST))
                progress.update(1)
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=spend, args=(i,)) for i in range(args.writers)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join()
    progress.close()
    budget.refresh_from_db()
    batches = sorted(batch for writer in writers for batch in writer.batches)
    spent, crossing = Decimal(0), None
    for index, (_moment, _events, cost) in enumerate(batches):
        spent += cost
        if crossing is None and spent >= args.amount:
            crossing = index
    after = batches[crossing + 1:] if crossing is not None else []
    overshoot = spent - args.amount
    bound = args.writers * args.batch * EVENT_COST
    print(f"run {run}: spent {spent} of {args.amount} CNY; overshoot {overshoot} CNY "
          f"({overshoot / args.amount:.2%}); {sum(b[1] for b in after)} events in {len(after)} batches committed "
          f"after the crossing batch; bound {bound} CNY ({args.writers} writers × one batch) — "
          f"{'within' if overshoot <= bound else 'OVER'} the bound; exhausted period {budget.exhausted_period}")


if __name__ == "__main__":
    main()
