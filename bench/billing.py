"""The nightly invoice job at 1,000 organizations (issue 11's benchmark): prints figures, asserts nothing.

On a throwaway database (bench/django_env.py; SQLite by default, PostgreSQL with DATABASE_URL):

- 1,000 organizations in eight timezones (half CNY with 6 % tax, half USD), two departments each,
  every one on a plan since the start of November 2026;
- a month of usage each: November 2026 on each organization's own clock, as rollup rows written
  directly in bulk (the per-day levels the job reads: by model and department, by model, by
  department; 3 models × 2 departments × 30 days = 180 + 90 + 60 rows per organization, 330,000
  in all). Ingesting events would measure ingestion, which bench/usage_engine.py already does;
  the job reads only the rollups (through the query engine) either way;
- then `run_billing(date=2026-12-02)`: the full run (1,000 invoices, each with a plan fee and six
  usage lines), and a rerun with nothing to do. Targets: < 60 s and < 5 s on this 2-core machine.

Run from the project root:
    python -m bench.billing                                                    # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/wt_invoicing python -m bench.billing
"""

import logging
import platform
import random
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from tqdm import tqdm

from bench.django_env import throwaway_database

ORGANIZATIONS = 1000
ZONES = ("Asia/Shanghai", "America/New_York", "Europe/London", "Asia/Kolkata", "UTC", "Australia/Sydney",
         "America/Los_Angeles", "Asia/Kathmandu")
MODELS = (("qwen-plus", "0.8", "2"), ("deepseek-v3", "2", "8"), ("gpt-4o-mini", "1.1", "4.4"))
DEPARTMENTS = ("Research", "Support")
MONTH_START, MONTH_DAYS = date(2026, 11, 1), 30
RUN_DATE = date(2026, 12, 2)
NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)  # November has ended on every clock
FULL_RUN_TARGET_S, RERUN_TARGET_S = 60.0, 5.0
BULK = 5000


def build_world() -> None:
    from billing.models import BillingAccount, Model, Plan, Price, Subscription
    from portal.models import Department, Organization
    from usage.models import UsageDaily, UsageDepartmentDaily, UsageModelDaily

    rng = random.Random(20261202)
    models = []
    for code, input_price, output_price in MODELS:
        model = Model.objects.create(code=code, name=code, provider="Bench")
        for currency, rate in (("CNY", Decimal(1)), ("USD", Decimal("0.14"))):
            Price.objects.create(model=model, currency=currency, effective_from=datetime(2020, 1, 1, tzinfo=UTC),
                                 input_per_mtok=Decimal(input_price) * rate,
                                 output_per_mtok=Decimal(output_price) * rate)
        models.append(model)
    plans = {"CNY": Plan.objects.create(code="team", name="Team", currency="CNY", monthly_fee=Decimal("999"),
                                        rpm_limit=600, tpm_limit=10**6, max_keys=50, max_teams=10),
             "USD": Plan.objects.create(code="team-usd", name="Team (USD)", currency="USD", monthly_fee=Decimal("149"),
                                        rpm_limit=600, tpm_limit=10**6, max_keys=50, max_teams=10)}
    organizations = Organization.objects.bulk_create(
        [Organization(name=f"Org {n:04d}", slug=f"org-{n:04d}", timezone=ZONES[n % len(ZONES)])
         for n in range(ORGANIZATIONS)], batch_size=BULK)
    currency = {o.pk: ("CNY" if n % 2 == 0 else "USD") for n, o in enumerate(organizations)}
    BillingAccount.objects.bulk_create(
        [BillingAccount(organization=o, currency=currency[o.pk], tax_rate=Decimal("0.06") if currency[o.pk] == "CNY"
                        else Decimal(0), legal_name=f"{o.name} Ltd.", billing_email=f"billing@{o.slug}.example")
         for o in organizations], batch_size=BULK)
    Subscription.objects.bulk_create(
        [Subscription(organization=o, plan=plans[currency[o.pk]],
                      started_at=datetime(2026, 11, 1, tzinfo=o.zone)) for o in organizations], batch_size=BULK)
    departments = Department.objects.bulk_create(
        [Department(organization=o, name=name) for o in organizations for name in DEPARTMENTS], batch_size=BULK)
    by_organization: dict[int, list] = {}
    for department in departments:
        by_organization.setdefault(department.organization_id, []).append(department)

    daily, by_model, by_department = [], [], []
    for organization in tqdm(organizations, desc="rollups: a month per organization", unit="org"):
        model_sums: dict[tuple, list[int]] = {}
        department_sums: dict[tuple, list[int]] = {}
        for offset in range(MONTH_DAYS):
            day = MONTH_START + timedelta(days=offset)
            for department in by_organization[organization.pk]:
                for model, (_code, input_price, output_price) in zip(models, MODELS, strict=True):
                    requests = rng.randint(20, 400)
                    prompt, completion = requests * rng.randint(300, 3000), requests * rng.randint(50, 800)
                    cost_units = (prompt * int(Decimal(input_price) * 100) + completion
                                  * int(Decimal(output_price) * 100))  # 1e-8 units: price/1e6 × 1e8
                    values = [requests, prompt, completion, cost_units, requests * 700]
                    row = dict(organization=organization, day=day, currency=currency[organization.pk],
                               requests=requests, prompt_tokens=prompt, completion_tokens=completion,
                               cost_units=cost_units, latency_sum_ms=requests * 700, latency_min_ms=80,
                               latency_max_ms=9000)
                    daily.append(UsageDaily(department=department, model=model, **row))
                    for sums, key in ((model_sums, (day, model)), (department_sums, (day, department))):
                        total = sums.setdefault(key, [0] * len(values))
                        for index, value in enumerate(values):
                            total[index] += value
        for sums, rows, Level, name in ((model_sums, by_model, UsageModelDaily, "model"),
                                        (department_sums, by_department, UsageDepartmentDaily, "department")):
            for (day, target), (requests, prompt, completion, cost_units, latency) in sums.items():
                rows.append(Level(organization=organization, day=day, currency=currency[organization.pk],
                                  requests=requests, prompt_tokens=prompt, completion_tokens=completion,
                                  cost_units=cost_units, latency_sum_ms=latency, latency_min_ms=80,
                                  latency_max_ms=9000, **{name: target}))
    for Level, rows in ((UsageDaily, daily), (UsageModelDaily, by_model), (UsageDepartmentDaily, by_department)):
        for start in tqdm(range(0, len(rows), BULK), desc=f"insert {Level._meta.db_table}", unit="batch"):
            Level.objects.bulk_create(rows[start:start + BULK])
    print(f"world: {ORGANIZATIONS} organizations, {len(departments)} departments, "
          f"{len(daily) + len(by_model) + len(by_department):,} rollup rows "
          f"({len(daily):,} by model and department)")


def timed_run(label: str):
    from django.db import connection

    from billing.invoicing import run_billing

    statements = 0

    def count(execute, sql, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    with tqdm(total=ORGANIZATIONS, desc=label, unit="org") as bar, connection.execute_wrapper(count):
        started = time.perf_counter()
        report = run_billing(date=RUN_DATE, now=NOW, progress=lambda done, total: bar.update(1))
        elapsed = time.perf_counter() - started
    return report, elapsed, statements


def main() -> None:
    with throwaway_database("billing"):
        from django.db import connection

        from billing.models import Invoice, InvoiceLine

        # One line per organization is 1,000 lines: the figures are the output.
        logging.getLogger("billing.invoicing").setLevel(logging.WARNING)
        database = f"{connection.vendor} {connection.pg_version if connection.vendor == 'postgresql' else ''}".strip()
        build_world()
        full, full_s, full_queries = timed_run("run_billing, full")
        lines = InvoiceLine.objects.count()
        again, rerun_s, rerun_queries = timed_run("run_billing, rerun")
        invoices = Invoice.objects.count()
        issued = Invoice.objects.filter(status="issued").count()

    verdict = {True: "PASS", False: "MISS"}
    print(f"\nBilling job on {database}, Python {platform.python_version()}, {platform.machine()}:\n")
    print("| Figure | Measured | Target | |")
    print("|---|---|---|---|")
    print(f"| full run: {ORGANIZATIONS} organizations, {full.invoices_created} invoices, {lines} lines | "
          f"{full_s:.1f} s ({full_s / ORGANIZATIONS * 1000:.1f} ms per organization, "
          f"{full_queries:,} SQL statements) | "
          f"< {FULL_RUN_TARGET_S:.0f} s | {verdict[full_s < FULL_RUN_TARGET_S]} |")
    print(f"| rerun with nothing to do ({again.invoices_created} invoices, {again.accounts_skipped} accounts up to "
          f"date) | {rerun_s:.2f} s ({rerun_queries} SQL statements) | < {RERUN_TARGET_S:.0f} s | "
          f"{verdict[rerun_s < RERUN_TARGET_S]} |")
    print(f"| invoices after both runs (one per organization expected) | {invoices} ({issued} issued) | "
          f"{ORGANIZATIONS} | {verdict[invoices == ORGANIZATIONS == issued]} |")


if __name__ == "__main__":
    main()
