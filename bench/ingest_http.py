"""HTTP ingestion benchmark: `POST /api/v1/usage/events` under the production server (gunicorn,
portal/gunicorn_conf.py), measured from outside, next to the in-process figure and to COPY.

In one run, on a throwaway PostgreSQL database seeded with bench.usage_engine's world (50
organizations in mixed zones, 5,000 keys, 30 priced models):

1. in-process: `billing.services.record_usage` (what the endpoint calls: validation, rating,
   storage, rollups, ledger charges and the hard-limit check in one transaction) on the same
   1,000-event batches, one writer, JSON decoding included;
2. gunicorn started as a subprocess against the database, then 1 and then 4 writer processes,
   each posting 1,000-event batches with httpx and the gateway's service token for a sustained
   period. Every tenth request replays the writer's previous batch, which must come back as
   1,000 duplicates. Events carry live timestamps (a few seconds apart across the run), as the
   gateway sends them, so concurrent batches meet on the same hourly and daily rollup rows;
3. freshness: a probe organization of its own gets a one-event batch every second; after each
   response the probe polls every rollup level (usage.levels.ROLLUPS) until they all count it;
4. lock waits: pg_stat_activity sampled every 100 ms while the writers run (the folder's
   backend apart), and the fold queue's depth and age with them;
5. exactly once: after the run (and the fold queue drained), the raw events, every rollup
   level's requests and the fill state all equal the sum of what the responses accepted;
6. COPY of the same stored rows into a bare table and into a table with the raw table's indexes;
7. where the CPU goes while the writers run: every process's user + system time from /proc by
   role (PostgreSQL, gunicorn, the Celery folder, this bench's writers and probes), in core-ms
   per 1,000 accepted events, and the machine's busy share from /proc/stat: what a target in
   events per second asks of the cores there are.

Rollups are folded after the ingest commit (usage/folding.py) by a real Celery worker
(`celery -A portal worker`, started here against the same database) on CELERY_BROKER_URL, which
the bench, gunicorn and the worker share; without CELERY_BROKER_URL every ingest transaction
folds its own batch (USAGE_FOLD_IN_TRANSACTION), and the bench says so.

It ends with one table (Markdown, for bench/RESULTS.md).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/NAME CELERY_BROKER_URL=redis://127.0.0.1:6379/N \
        python -m bench.ingest_http [--seconds 30]
"""

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.cpu import cpu_by_role, machine_busy_seconds, process_times
from bench.django_env import throwaway_database

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "/api/v1/usage/events"
BATCH = 1000
POOL_BATCHES = 120  # distinct batch bodies; writers cycle through them under fresh request_ids
REPLAY_EVERY = 10  # every tenth request of a writer resends its previous batch
LIVE_RATE = 20_000  # events per second the pool's timestamps are spread at
TARGET_EVENTS_PER_SECOND = 15_000
TARGET_FRESHNESS_SECONDS = 5.0
RID_MARK = b'"request_id": "RID-'
BARE_TABLE, INDEXED_TABLE = "bench_http_copy_bare", "bench_http_copy_indexed"


@dataclass
class Phase:
    label: str
    writers: int
    seconds: float = 0.0
    accepted: int = 0
    duplicates: int = 0
    requests: int = 0
    replays_ok: int = 0
    replays_bad: int = 0
    failures: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    lock_samples: int = 0
    lock_waits: Counter = field(default_factory=Counter)
    active_samples: int = 0
    freshness_ms: list[float] = field(default_factory=list)
    folder_samples: int = 0  # samples in which the folder's backend was active
    folder_waits: Counter = field(default_factory=Counter)
    queue_events_max: int = 0  # the most events queued and not yet folded, in one sample
    queue_age_max_ms: float = 0.0  # the oldest queued batch's age, at worst
    cpu_seconds: Counter = field(default_factory=Counter)  # by role, over the sustained period
    cpu_events: int = 0  # the events accepted over that same period
    machine_seconds: float = 0.0  # CPU seconds the whole machine spent then (/proc/stat)
    machine_busy: float = 0.0  # that as a share of all its cores

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


# --- the workload ---------------------------------------------------------------------------------

def build_pool(world, start: datetime) -> list[bytes]:
    """POOL_BATCHES batch bodies with bench.usage_engine's mix of organizations, keys, models and
    sizes, re-stamped with live timestamps; request_ids are `RID-<n>` placeholders."""
    from bench.usage_engine import generate

    pool: list[bytes] = []
    sequence = 0
    for batch in generate(world, POOL_BATCHES * BATCH):
        for event in batch:
            moment = start + timedelta(seconds=sequence / LIVE_RATE)
            event["timestamp"] = moment.isoformat(timespec="milliseconds")
            event["request_id"] = f"RID-{sequence:07d}"
            sequence += 1
        pool.append(json.dumps({"events": batch}).encode())
    return pool


def stamped(body: bytes, prefix: str) -> bytes:
    """The body with every request_id made unique to `prefix` (one bytes.replace, ~0.1 ms)."""
    return body.replace(RID_MARK, b'"request_id": "' + prefix.encode() + b"-")


# --- the writers (forked processes: httpx only, no Django) -----------------------------------------

def writer(number: int, phase_label: str, url: str, token: str, pool: list[bytes], stop_at: float,
           progress, results) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    accepted = duplicates = requests = replays_ok = replays_bad = failures = 0
    latencies: list[float] = []
    previous: bytes | None = None
    round_number = 0
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        while time.monotonic() < stop_at:
            replay = previous is not None and requests % REPLAY_EVERY == REPLAY_EVERY - 1
            if replay:
                body = previous
            else:
                body = stamped(pool[(round_number * 7 + number) % len(pool)],
                               f"{phase_label}w{number}r{round_number}")
                round_number += 1
            started = time.perf_counter()
            response = client.post(ENDPOINT, content=body)
            latencies.append((time.perf_counter() - started) * 1000)
            requests += 1
            if response.status_code != 200:
                failures += 1
                if failures <= 3:
                    print(f"writer {number}: {response.status_code} {response.text[:300]}", file=sys.stderr)
                continue
            answer = response.json()
            accepted += answer["accepted"]
            duplicates += answer["duplicates"]
            if replay:
                if answer == {"accepted": 0, "duplicates": BATCH}:
                    replays_ok += 1
                else:
                    replays_bad += 1
            with progress.get_lock():
                progress.value += answer["accepted"]
            previous = body
    results.put((accepted, duplicates, requests, replays_ok, replays_bad, failures, latencies))


# --- measuring from the bench process --------------------------------------------------------------

def sql(statement: str, params=()) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


class LockSampler(threading.Thread):
    """pg_stat_activity every 100 ms: how many ingest backends are active, and on what lock
    each waiting one waits (the relation's name where there is one)."""

    def __init__(self, database: str, phase: Phase) -> None:
        super().__init__(daemon=True)
        self.database, self.phase, self.stopping = database, phase, threading.Event()

    def run(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            while not self.stopping.wait(0.1):
                # A row-lock waiter waits on the holder's transaction id, holding (or, behind
                # another waiter, waiting for) a tuple lock that names the table.
                rows = conn.execute(
                    "SELECT a.wait_event_type, a.wait_event, (SELECT c.relname FROM pg_locks t "
                    "JOIN pg_class c ON c.oid = t.relation WHERE t.pid = a.pid AND t.locktype = 'tuple' LIMIT 1), "
                    "a.query LIKE '%%usage_fold_staging%%' OR a.query LIKE '%%SKIP LOCKED%%' "
                    "OR a.query LIKE '%%pg_try_advisory_xact_lock%%' "
                    "FROM pg_stat_activity a WHERE a.datname = %s AND a.state = 'active' "
                    "AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'",
                    [self.database]).fetchall()
                queued_events, age = conn.execute(
                    "SELECT COALESCE(SUM(events), 0), EXTRACT(EPOCH FROM now() - MIN(queued_at)) * 1000 "
                    "FROM usage_usagefoldqueue").fetchone()
                self.phase.queue_events_max = max(self.phase.queue_events_max, int(queued_events))
                self.phase.queue_age_max_ms = max(self.phase.queue_age_max_ms, float(age or 0))
                self.phase.lock_samples += 1
                for wait_type, wait_event, relname, folder in rows:
                    if folder:
                        self.phase.folder_samples += 1
                        if wait_type:
                            self.phase.folder_waits[f"{wait_type}:{wait_event}"] += 1
                        continue
                    self.phase.active_samples += 1
                    if wait_type == "Lock":
                        # An ON CONFLICT upsert meeting another batch's uncommitted rollup row waits
                        # on that batch's transaction id without any tuple lock: no table to name.
                        self.phase.lock_waits[f"row lock on {relname}" if relname
                                              else f"Lock:{wait_event} (an upsert on another batch's row)"] += 1
                    elif wait_type in ("LWLock", "IO", "IPC"):
                        self.phase.lock_waits[f"{wait_type}:{wait_event}"] += 1

    def dsn(self) -> str:
        from django.db import connection

        settings = connection.settings_dict
        return (f"host={settings['HOST'] or 'localhost'} port={settings['PORT'] or 5432} "
                f"user={settings['USER']} dbname={self.database}"
                + (f" password={settings['PASSWORD']}" if settings["PASSWORD"] else ""))


class FreshnessProbe(threading.Thread):
    """Once a second, one event for the probe organization over HTTP; after its response, how
    long until every rollup level counts it."""

    def __init__(self, url: str, token: str, key_uuid: str, model: str, organization_id: int, phase: Phase,
                 dsn: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.key_uuid, self.model = url, token, key_uuid, model
        self.organization_id, self.phase, self.dsn = organization_id, phase, dsn
        self.stopping = threading.Event()
        self.sent = 0

    def run(self) -> None:
        import httpx
        import psycopg

        from usage.levels import ROLLUPS

        sql_levels = [f"(SELECT COALESCE(SUM(requests), 0) FROM {level.table} WHERE organization_id = %s)"
                               for level in ROLLUPS]
        query = "SELECT " + ", ".join(sql_levels)
        with (httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as client,
              psycopg.connect(self.dsn, autocommit=True) as conn):
            # Probe events of earlier phases (every one stored: raw events are committed with
            # the response): a level counts this phase's n-th probe when it counts before + n.
            before = conn.execute("SELECT count(*) FROM usage_usageevent WHERE organization_id = %s",
                                  [self.organization_id]).fetchone()[0]
            while not self.stopping.wait(1.0):
                self.sent += 1
                event = {"request_id": f"probe-{uuid.uuid4()}", "timestamp": datetime.now(UTC).isoformat(),
                         "key_id": self.key_uuid, "model": self.model, "prompt_tokens": 10, "completion_tokens": 5,
                         "latency_ms": 100, "status_code": 200}
                response = client.post(ENDPOINT, json={"events": [event]})
                answered = time.perf_counter()
                if response.status_code != 200:
                    print(f"probe: {response.status_code} {response.text[:200]}", file=sys.stderr)
                    continue
                while True:
                    counts = conn.execute(query, [self.organization_id] * len(ROLLUPS)).fetchone()
                    if all(count >= before + self.sent for count in counts):
                        break
                    if time.perf_counter() - answered > 60:
                        print("probe: a level did not count the probe within 60 s", file=sys.stderr)
                        break
                    time.sleep(0.02)
                self.phase.freshness_ms.append((time.perf_counter() - answered) * 1000)


# --- where the CPU goes ---------------------------------------------------------------------------

def role_of(command: str, cmdline: str) -> str:
    """Which part of the run a process is (bench.cpu.cpu_by_role)."""
    if command == "postgres" or cmdline.startswith("postgres"):
        return "PostgreSQL (every backend)"
    if "gunicorn" in cmdline:
        return "gunicorn workers (the endpoint)"
    if "celery" in cmdline:
        return "Celery worker (the folder)"
    if "bench.ingest_http" in cmdline:
        return LOAD_GENERATOR
    return "everything else"


LOAD_GENERATOR = "load generator (writers, probe, sampler)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url(name: str) -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def gunicorn(database: str, port: int, log_path: Path):
    env = {**os.environ, "DATABASE_URL": database_url(database), "BIND": f"127.0.0.1:{port}",
           "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "portal.settings"}
    with log_path.open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "portal/gunicorn_conf.py"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"gunicorn did not start; see {log_path}")
                time.sleep(0.2)
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def celery_folder(database: str, log_path: Path):
    """A real Celery worker on the bench's database and CELERY_BROKER_URL: it runs the fold task
    each ingest commit enqueues (usage.tasks.fold_usage). None without a broker."""
    if not os.environ.get("CELERY_BROKER_URL"):
        yield None
        return
    env = {**os.environ, "DATABASE_URL": database_url(database), "LOG_LEVEL": "WARNING",
           "DJANGO_SETTINGS_MODULE": "portal.settings"}
    celery = [sys.executable, "-m", "celery", "-A", "portal"]
    # Tasks left on the broker by an earlier run would fold nothing here, but cost the worker time.
    subprocess.run([*celery, "purge", "-f"], cwd=ROOT, env=env, check=True, capture_output=True)
    with log_path.open("w") as log:
        process = subprocess.Popen([*celery, "worker", "--concurrency", "2", "--without-gossip", "--without-mingle",
                                    "--without-heartbeat", "--loglevel", "WARNING"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            time.sleep(3)  # its processes forked and connected
            if process.poll() is not None:
                raise SystemExit(f"the Celery worker did not start; see {log_path}")
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def drain_fold_queue(seconds: float = 120) -> float:
    """Wait until the folder has folded everything queued; returns how long that took."""
    started = time.perf_counter()
    while sql("SELECT EXISTS (SELECT 1 FROM usage_usagefoldqueue)")[0][0]:
        if time.perf_counter() - started > seconds:
            print(f"the fold queue was not drained within {seconds:.0f} s", file=sys.stderr)
            break
        time.sleep(0.1)
    return time.perf_counter() - started


def warm_up(url: str, token: str, pool: list[bytes], workers: int) -> None:
    """A few batches per server worker first (imports, connections, the price books' first reads),
    outside the clock; they are counted like the rest."""
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}",
                                             "Content-Type": "application/json"}, timeout=120) as client:
        for number in range(workers * 2):
            response = client.post(ENDPOINT, content=stamped(pool[number % len(pool)], f"warm{number}"))
            response.raise_for_status()


def run_phase(phase: Phase, url: str, token: str, pool: list[bytes], seconds: float, database: str,
              probe_args: tuple) -> None:
    from django.db import connection
    from tqdm import tqdm

    connection.close()  # never inherited by a forked writer
    context = multiprocessing.get_context("fork")
    progress, results = context.Value("q", 0), context.Queue()
    started = time.monotonic()
    stop_at = started + seconds
    processes = [context.Process(target=writer, args=(n, phase.label, url, token, pool, stop_at, progress, results))
                 for n in range(phase.writers)]
    sampler = LockSampler(database, phase)
    probe = FreshnessProbe(url, token, *probe_args, phase, sampler.dsn())
    cpu_before, busy_before, clock_before = process_times(), machine_busy_seconds(), time.monotonic()
    accepted_before = progress.value
    for process in processes:
        process.start()
    sampler.start()
    probe.start()
    with tqdm(total=int(seconds), desc=f"{phase.writers} writer(s)", unit="s", bar_format=(
            "{desc}: {bar} {n_fmt}/{total_fmt} s {postfix}")) as bar:
        while (now := time.monotonic()) < stop_at:
            time.sleep(0.5)
            bar.n = min(int(now - started), int(seconds))
            bar.set_postfix_str(f"{progress.value:,} accepted, {progress.value / max(now - started, 1e-9):,.0f} ev/s")
    # While the writers still live (finishing their last request): their time is theirs to count.
    phase.cpu_seconds = cpu_by_role(cpu_before, process_times(), role_of)
    phase.cpu_events = progress.value - accepted_before
    phase.machine_seconds = machine_busy_seconds() - busy_before
    phase.machine_busy = phase.machine_seconds / ((time.monotonic() - clock_before) * (os.cpu_count() or 1))
    collected = [results.get() for _ in processes]
    for process in processes:
        process.join()
    phase.seconds = time.monotonic() - started  # the last requests end after stop_at
    sampler.stopping.set()
    probe.stopping.set()
    sampler.join()
    probe.join()
    for accepted, duplicates, requests, replays_ok, replays_bad, failures, latencies in collected:
        phase.accepted += accepted
        phase.duplicates += duplicates
        phase.requests += requests
        phase.replays_ok += replays_ok
        phase.replays_bad += replays_bad
        phase.failures += failures
        phase.latencies_ms.extend(latencies)
    phase.accepted_probe = probe.sent  # type: ignore[attr-defined]


# Where a batch's time goes in-process: each of these is wrapped with a clock for the in-process
# phase (a few µs per call); "other" is the rest of record_usage (the transaction, the result).
PROFILED = (
    ("usage.services", "_validate_shapes", "per-field Python checks (when usage.wire declines)"),
    ("usage.services", "_look_up_references", "key, model and price look-ups"),
    ("usage.services", "_rate_events", "rating"),
    ("usage.services", "store_and_queue", "store_and_queue (staging COPY, insert, queue rows)"),
    ("billing.services", "charge_usage", "ledger charges"),
    ("billing.services", "enforce_hard_limits", "hard-limit check"),
)


def in_process(pool: list[bytes], batches: int) -> tuple[float, int, dict[str, float], float]:
    """record_usage on `batches` batches, one after another in this process (JSON decoding
    included, HTTP not). Returns the time, the events accepted, milliseconds per batch by stage,
    and SQL statements per batch."""
    import functools
    import importlib

    from django.db import connection

    from billing.services import record_usage
    from usage.wire import shaped_events

    spent: Counter = Counter()
    statements = 0

    def clocked(fn, slot):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[slot] += time.perf_counter_ns() - started
        return wrapper

    def counting(execute, sql_text, params, many, context):
        nonlocal statements
        statements += 1
        return execute(sql_text, params, many, context)

    originals = []
    for module_name, attribute, slot in PROFILED:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute, None)
        if original is not None:
            originals.append((module, attribute, original))
            setattr(module, attribute, clocked(original, slot))
    connection.ensure_connection()
    connection.commit = clocked(connection.commit, "COMMIT")
    accepted = 0
    record = clocked(record_usage, "total")
    try:
        with connection.execute_wrapper(counting):
            for number in range(batches):
                body = stamped(pool[number % len(pool)], f"inproc{number}")
                started = time.perf_counter_ns()
                # What the endpoint does: the compiled decoder, and json.loads only when it declines.
                events = shaped_events(body)
                if events is None:
                    events = json.loads(body)["events"]
                spent["decoding and shape checks (usage.wire)"] += time.perf_counter_ns() - started
                accepted += record(events).accepted
    finally:
        for module, attribute, original in originals:
            setattr(module, attribute, original)
        del connection.commit
    total = spent.pop("total") + spent["decoding and shape checks (usage.wire)"]
    per_batch = {slot: nanoseconds / batches / 1e6 for slot, nanoseconds in spent.items()}
    per_batch["other (transaction, Python glue)"] = (total - sum(spent.values())) / batches / 1e6
    return total / 1e9, accepted, per_batch, statements / batches


def copy_figures(scratch: Path) -> tuple[int, float, float]:
    """COPY every stored event (dumped to a file first, outside the clock) into a bare table and
    into one with the raw table's indexes; each COPY one autocommitted statement."""
    from django.db import connection

    dump = scratch / "events.copy"
    with connection.cursor() as cursor, dump.open("wb") as out:
        with cursor.cursor.copy("COPY (SELECT * FROM usage_usageevent ORDER BY id) TO STDOUT") as copy:
            for chunk in copy:
                out.write(chunk)
    rows = sql("SELECT count(*) FROM usage_usageevent")[0][0]
    timings = []
    for table, like in ((BARE_TABLE, "usage_usageevent"), (INDEXED_TABLE, "usage_usageevent INCLUDING INDEXES")):
        sql(f"DROP TABLE IF EXISTS {table}")
        sql(f"CREATE TABLE {table} (LIKE {like})")
        started = time.perf_counter()
        with connection.cursor() as cursor, dump.open("rb") as source:
            with cursor.cursor.copy(f"COPY {table} FROM STDIN") as copy:
                while chunk := source.read(1 << 20):
                    copy.write(chunk)
        timings.append(time.perf_counter() - started)
        sql(f"DROP TABLE {table}")
    return rows, *timings


def exactly_once(expected: int) -> list[tuple[str, int]]:
    """What each place holds, to compare with what the responses accepted."""
    from usage.levels import ROLLUPS
    from usage.models import UsageFillState

    places = [("raw events", sql("SELECT count(*) FROM usage_usageevent")[0][0])]
    places += [(f"{level.name} level, sum(requests)",
                int(sql(f"SELECT COALESCE(SUM(requests), 0) FROM {level.table}")[0][0])) for level in ROLLUPS]
    places.append(("fill state, sum(events)",
                   int(sql(f"SELECT COALESCE(SUM(events), 0) FROM {UsageFillState._meta.db_table}")[0][0])))
    return places


def require_postgresql() -> None:
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        raise SystemExit("bench.ingest_http needs PostgreSQL: set DATABASE_URL=postgres://...")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="sustained period per writer count (default 30)")
    parser.add_argument("--writers", default="1,4", help="writer counts, in order (default 1,4)")
    parser.add_argument("--in-process-batches", type=int, default=20)
    parser.add_argument("--profile", action="store_true",
                        help="also print cProfile's top functions over the in-process batches")
    args = parser.parse_args()
    require_postgresql()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    print(f"$ python -m bench.ingest_http {' '.join(sys.argv[1:])}")
    print(f"started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC; load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores")
    with (throwaway_database("ingest"), tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch_dir,
          contextlib.ExitStack() as folder_stack):
        from django.db import connection

        from bench.usage_engine import build_world
        from keys.services import create_service_token
        from portal.services import SYSTEM
        from tests import factories

        scratch = Path(scratch_dir)
        database = connection.settings_dict["NAME"]
        started = time.perf_counter()
        world = build_world()
        probe_organization = factories.make_organization("Freshness probe", timezone="UTC")
        probe_key, _ = factories.make_inference_key(factories.make_department(probe_organization, "Probe"))
        token = create_service_token(actor=SYSTEM, name="bench gateway").secret
        print(f"world built in {time.perf_counter() - started:,.1f} s")
        started = time.perf_counter()
        pool = build_pool(world, datetime.now(UTC))
        print(f"{len(pool)} batch bodies of {BATCH} events ({sum(map(len, pool)) / len(pool) / 1024:,.0f} KiB each) "
              f"built in {time.perf_counter() - started:,.1f} s")

        profiled_accepted = 0
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiled_accepted = profiler.runcall(in_process, pool[::-1], args.in_process_batches)[1]
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        from django.conf import settings

        folder = (f"a Celery worker on {os.environ['CELERY_BROKER_URL']}, after each commit"
                  if not settings.USAGE_FOLD_IN_TRANSACTION else "each ingest transaction, before its commit")
        print(f"rollups folded by {folder}")
        worker_log = scratch / "celery.log"
        folder_stack.enter_context(celery_folder(database, worker_log))
        in_seconds, in_accepted, stages, statements = in_process(pool, args.in_process_batches)
        in_rate = in_accepted / in_seconds
        print(f"in-process: the fold queue drained {drain_fold_queue():,.1f} s after the last batch")
        print(f"in-process record_usage: {in_accepted:,} events in {in_seconds:,.1f} s = {in_rate:,.0f} events/s; "
              f"per 1,000-event batch ({statements:,.0f} SQL statements):")
        for slot, milliseconds in sorted(stages.items(), key=lambda item: -item[1]):
            print(f"  {slot:<55} {milliseconds:7.1f} ms")

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        phases = [Phase(f"p{count}", int(count)) for count in args.writers.split(",") if int(count)]
        accepted_total = in_accepted + profiled_accepted
        probe_args = (str(probe_key.uuid), world.model_codes[0], probe_organization.pk)
        log_path = scratch / "gunicorn.log"
        with gunicorn(database, port, log_path) if phases else contextlib.nullcontext():
            import portal.gunicorn_conf as conf

            warm = 0
            if phases:
                warm_up(url, token, pool, conf.workers * max(1, getattr(conf, "threads", 1)))
                warm = 2 * conf.workers * max(1, getattr(conf, "threads", 1)) * BATCH
                print(f"gunicorn: {conf.workers} {conf.worker_class} workers"
                        + (f" × {conf.threads} threads" if conf.worker_class == "gthread" else "") + f" on {url}")
            for phase in phases:
                run_phase(phase, url, token, pool, args.seconds, database, probe_args)
                accepted_total += phase.accepted + phase.accepted_probe  # type: ignore[attr-defined]
                print(f"{phase.writers} writer(s): {phase.accepted:,} accepted in {phase.seconds:,.1f} s = "
                      f"{phase.rate:,.0f} events/s; {phase.requests} requests, {phase.failures} failed")
        accepted_total += warm
        print(f"the fold queue drained {drain_fold_queue():,.1f} s after the last batch")
        folder_stack.close()  # the worker stopped: nothing folds behind the counts below
        # The rollups may still be folding the last batches (if folding is deferred): wait for them.
        settle_started = time.perf_counter()
        places = exactly_once(accepted_total)
        while any(count != places[0][1] for _, count in places) and time.perf_counter() - settle_started < 60:
            time.sleep(0.2)
            places = exactly_once(accepted_total)
        copy_rows, bare_seconds, indexed_seconds = copy_figures(scratch)
        gunicorn_log = log_path.read_text() if log_path.exists() else ""
        gunicorn_log += worker_log.read_text() if worker_log.exists() else ""

    print_summary(phases, in_rate, copy_rows, bare_seconds, indexed_seconds, places, accepted_total)
    errors = [line for line in gunicorn_log.splitlines() if "Traceback" in line or "ERROR" in line]
    if errors:
        print(f"\ngunicorn logged {len(errors)} error line(s), the first: {errors[0]}")
    print(f"finished {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")


def print_summary(phases: list[Phase], in_rate: float, copy_rows: int, bare_seconds: float, indexed_seconds: float,
                  places: list[tuple[str, int]], accepted_total: int) -> None:
    lines = ["| Figure | Measured | Target | |", "|---|---|---|---|"]

    def add(name: str, measured: str, target: str = "", ok: bool | None = None) -> None:
        lines.append(f"| {name} | {measured} | {target} | {'' if ok is None else 'PASS' if ok else 'MISS'} |")

    add("in-process record_usage, 1 writer", f"{in_rate:,.0f} events/s")
    for phase in phases:
        target = phase.writers == 4
        add(f"HTTP, {phase.writers} writer(s), {phase.seconds:,.0f} s sustained", f"{phase.rate:,.0f} events/s",
            f"≥ {TARGET_EVENTS_PER_SECOND:,}" if target else "",
            phase.rate >= TARGET_EVENTS_PER_SECOND if target else None)
        add(f"HTTP, {phase.writers} writer(s): batch latency median / p99",
            f"{statistics.median(phase.latencies_ms):,.0f} / {percentile(phase.latencies_ms, 0.99):,.0f} ms")
        add(f"HTTP, {phase.writers} writer(s): replays answered 0 accepted / 1,000 duplicates",
            f"{phase.replays_ok} of {phase.replays_ok + phase.replays_bad}", "all", phase.replays_bad == 0)
        if phase.freshness_ms:
            add(f"HTTP, {phase.writers} writer(s): freshness, response → every rollup level counts it "
                "(p50 / p99 / max)",
                f"{statistics.median(phase.freshness_ms):,.0f} / {percentile(phase.freshness_ms, 0.99):,.0f} / "
                f"{max(phase.freshness_ms):,.0f} ms ({len(phase.freshness_ms)} probes)",
                f"≤ {TARGET_FRESHNESS_SECONDS:.0f} s", max(phase.freshness_ms) <= TARGET_FRESHNESS_SECONDS * 1000)
        add(f"HTTP, {phase.writers} writer(s): fold queue at worst (events waiting / oldest batch's age)",
            f"{phase.queue_events_max:,} / {phase.queue_age_max_ms:,.0f} ms")
        folder_top = ", ".join(f"{name} {count / max(phase.folder_samples, 1):.0%}" for name, count in
                               phase.folder_waits.most_common(3))
        add(f"HTTP, {phase.writers} writer(s): folder backend active in samples (waiting on)",
            f"{phase.folder_samples / max(phase.lock_samples, 1):.0%}" + (f" ({folder_top})" if folder_top else ""))
        waits = sum(phase.lock_waits.values())
        top = ", ".join(f"{name} {count / max(phase.active_samples, 1):.0%}" for name, count in
                        phase.lock_waits.most_common(4))
        if phase.cpu_events:
            per_thousand = {role: seconds * 1e6 / phase.cpu_events for role, seconds in phase.cpu_seconds.items()}
            machine = phase.machine_seconds * 1e6 / phase.cpu_events
            add(f"HTTP, {phase.writers} writer(s): CPU per 1,000 accepted events, whole machine (busy share)",
                f"{machine:,.0f} core-ms ({phase.machine_busy:.0%} of {os.cpu_count()} cores); by process: "
                + ", ".join(f"{role} {value:,.0f}" for role, value in
                            sorted(per_thousand.items(), key=lambda item: -item[1]) if value >= 0.5))
            if phase.writers == 4:
                serving = machine - per_thousand.get(LOAD_GENERATOR, 0)
                add(f"HTTP, {phase.writers} writer(s): events/s {os.cpu_count()} cores allow at that CPU per event "
                    "(load generator apart)", f"{(os.cpu_count() or 1) * 1e6 / max(serving, 1e-9):,.0f}",
                    f"≥ {TARGET_EVENTS_PER_SECOND:,}")
        add(f"HTTP, {phase.writers} writer(s): active backends per sample / waiting",
            f"{phase.active_samples / max(phase.lock_samples, 1):.1f} / {waits / max(phase.lock_samples, 1):.2f}"
            + (f" ({top})" if top else ""))
    add(f"COPY into a bare table ({copy_rows:,} rows, one statement)", f"{copy_rows / bare_seconds:,.0f} rows/s")
    add("COPY into a table with the raw table's indexes", f"{copy_rows / indexed_seconds:,.0f} rows/s")
    for name, count in places:
        add(f"exactly once: {name}", f"{count:,}", f"= {accepted_total:,} accepted", count == accepted_total)
    print("\nSUMMARY")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
