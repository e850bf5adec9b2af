"""What the gateway adds to a call (issue 15): 32 concurrent clients for 30 s each, plain and
streaming, through the gateway and directly to the stand-in provider, in one run.

Four processes on this machine: the stand-in provider (bench/standin_provider.py), one gateway
worker (uvicorn serving portal.asgi, as one gunicorn worker of `make serve-prod`; rate limits,
reservations and metering included, on a throwaway database of DATABASE_URL's server and the
Redis of CACHE_URL/GATEWAY_REDIS_URL when set), the metering consumer that stores the events
(`manage.py consume_metering`, as make serve-prod runs it beside gunicorn), and this load
generator (httpx on one event loop).
The direct phases call the same provider with the same client, so the difference between the two
is what the gateway adds. Printed: latency p50/p99 of each phase, the added p50/p99, requests per
second and its ratio to direct, for streams the time to the first content chunk, and the CPU time
each process used per call in each phase (/proc; PostgreSQL's and Redis's own not counted).

Targets (issue 15, this 2-core machine): added p50 ≤ 3 ms, added p99 ≤ 15 ms, throughput ≥ 50 %
of direct. Run: `make bench-gateway` (BENCH_ARGS="--seconds 10" for a quick look).
"""

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.cpu import machine_busy_seconds
from bench.django_env import throwaway_database

# The load generator's own httpx lines are not figures.
os.environ.setdefault("LOG_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 32
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark in a few words please"}]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Phase:
    name: str
    url: str
    secret: str
    stream: bool
    latencies: list[float] = field(default_factory=list)
    first_tokens: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    machine_seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


async def one_call(http: httpx.AsyncClient, phase: Phase) -> None:
    try:
        await _one_call(http, phase)
    except httpx.TransportError:  # counted and printed (a connection the server dropped), not fatal
        phase.errors += 1


async def _one_call(http: httpx.AsyncClient, phase: Phase) -> None:
    body = {"model": "gpt-bench", "messages": MESSAGES, "max_tokens": 12}
    headers = {"authorization": f"Bearer {phase.secret}"}
    started = time.perf_counter()
    if not phase.stream:
        response = await http.post(phase.url, json=body, headers=headers)
        if response.status_code != 200:
            phase.errors += 1
            return
        phase.latencies.append(time.perf_counter() - started)
        return
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    first = None
    async with http.stream("POST", phase.url, json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            phase.errors += 1
            return
        async for line in response.aiter_lines():
            if first is None and '"content":"w' in line:
                first = time.perf_counter() - started
    phase.latencies.append(time.perf_counter() - started)
    phase.first_tokens.append(first if first is not None else float("nan"))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process so far (this one when pid is None)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(phase: Phase, seconds: float, pids: dict[str, int | None]) -> None:
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:
        for _ in range(CLIENTS):  # warm the connections
            await one_call(http, phase)
        phase.latencies.clear(), phase.first_tokens.clear()
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                await one_call(http, phase)

        started = time.perf_counter()
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = machine_busy_seconds()
        progress = tqdm(total=int(seconds), desc=phase.name, unit="s", leave=False)
        tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        while not all(task.done() for task in tasks):
            await asyncio.sleep(1)
            progress.update(1)
        progress.close()
        await asyncio.gather(*tasks)
        phase.seconds = time.perf_counter() - started
        phase.cpu_seconds = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        phase.machine_seconds = machine_busy_seconds() - machine_before


@contextlib.contextmanager
def process(arguments: list[str], port: int | None, env: dict, log: Path):
    """A child process until exit (SIGTERM then); with a port, once it listens there."""
    with log.open("w") as output:
        child = subprocess.Popen(arguments, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while port is not None:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(arguments[1:4])} did not start; see {log}")
                time.sleep(0.1)
            yield child
        finally:
            child.terminate()
            child.wait(timeout=60)


def database_url() -> str:
    from django.db import connection

    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    return (f"postgres://{config['USER']}:{config['PASSWORD'] or ''}@{config['HOST'] or '127.0.0.1'}:"
            f"{config['PORT'] or 5432}/{config['NAME']}")


def serve_profiled(stats_file: str, port: int) -> None:
    """The gateway worker under cProfile (--profile): uvicorn re-raises SIGTERM after its graceful
    shutdown, so the stats are written by a SIGTERM handler it restores and calls then."""
    import cProfile
    import signal

    import uvicorn

    profiler = cProfile.Profile()

    def write_and_exit(*_signal) -> None:
        profiler.disable()
        profiler.dump_stats(stats_file)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, write_and_exit)
    config = uvicorn.Config("portal.asgi:application", host="127.0.0.1", port=port, log_level="warning",
                            access_log=False, loop="uvloop", http="httptools")
    profiler.enable()
    uvicorn.Server(config).run()
    write_and_exit()


def main() -> None:
    global CLIENTS
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-profiled":
        return serve_profiled(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent clients (issue 15: 32)")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the gateway worker under cProfile and write its stats to FILE (figures then "
                             "include the profiler's own cost: for where the time goes, not for the targets)")
    args = parser.parse_args()
    CLIENTS = args.clients
    with throwaway_database("gateway"):
        from django.conf import settings
        from django.db import connection

        from keys import services
        from portal.services import SYSTEM
        from tests import factories
        from usage.models import UsageEvent

        provider_port, gateway_port = free_port(), free_port()
        provider_url = f"http://127.0.0.1:{provider_port}/v1"
        from decimal import Decimal

        from billing.budgets import create_budget
        from billing.services import subscribe

        organization = factories.make_organization("Bench")
        factories.make_model("gpt-bench")
        # Every check the gateway makes is on, with room enough never to refuse: RPM and TPM of the
        # key, its department and the organization's plan (six moving windows), and hard budgets
        # over the organization and the key (two reservation counters).
        roomy = {"rpm_limit": 1_000_000, "tpm_limit": 100_000_000}
        subscribe(actor=SYSTEM, organization=organization, plan=factories.make_plan(**roomy))
        department = factories.make_department(organization, "Bench team", **roomy)
        key, secret = factories.make_inference_key(department, **roomy)
        create_budget(actor=SYSTEM, organization=organization, scope="organization", amount=Decimal("1000000"),
                      hard_limit=True)
        create_budget(actor=SYSTEM, organization=organization, scope="key", key=key, amount=Decimal("1000000"),
                      hard_limit=True)
        services.create_upstream(actor=SYSTEM, name="stand-in", base_url=provider_url, api_key="sk-bench-upstream",
                                 model_codes=["gpt-bench"], timeout_seconds=30, max_retries=0)
        redis_url = settings.GATEWAY_REDIS_URL
        env = {**os.environ, "DATABASE_URL": database_url(), "GATEWAY_REDIS_URL": redis_url,
               "CACHE_URL": redis_url, "LOG_LEVEL": "WARNING"}
        scratch = ROOT / "test-artifacts"
        scratch.mkdir(exist_ok=True)
        print(f"database: {connection.vendor}; shared store: {redis_url or 'process memory (no Redis)'}; "
              f"{CLIENTS} clients, {args.seconds:.0f} s a phase; checks on: key, IP, model, RPM+TPM of key, "
              f"department and plan, 2 hard budgets (organization, key), metering")
        with (process([sys.executable, "manage.py", "consume_metering"], None, env, scratch / "bench-metering.log")
              as consumer,
              process([sys.executable, "-m", "bench.standin_provider", "--port", str(provider_port)], provider_port,
                      env, scratch / "bench-provider.log") as provider,
              process([sys.executable, "-m", "bench.gateway", "--serve-profiled", args.profile, str(gateway_port)]
                      if args.profile else
                      [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--host", "127.0.0.1", "--port",
                       str(gateway_port), "--log-level", "warning", "--no-access-log", "--loop", "uvloop",
                       "--http", "httptools"], gateway_port, env, scratch / "bench-gateway.log") as gateway_process):
            gateway_url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
            phases = [Phase("direct plain", provider_url + "/chat/completions", "sk-bench-upstream", False),
                      Phase("gateway plain", gateway_url, secret, False),
                      Phase("direct stream", provider_url + "/chat/completions", "sk-bench-upstream", True),
                      Phase("gateway stream", gateway_url, secret, True)]
            pids = {"load generator": None, "provider": provider.pid, "gateway": gateway_process.pid,
                    "metering consumer": consumer.pid if consumer.poll() is None else None}
            if pids["metering consumer"] is None:
                del pids["metering consumer"]  # no Redis: the gateway stores its own events
            for phase in phases:
                asyncio.run(run_phase(phase, args.seconds, pids))
                print(f"{phase.name:<15} {len(phase.latencies):>7,} calls {phase.throughput:8.1f}/s  "
                      f"p50 {percentile(phase.latencies, .5) * 1000:7.2f} ms  "
                      f"p99 {percentile(phase.latencies, .99) * 1000:7.2f} ms"
                      + (f"  first token p50 {percentile(phase.first_tokens, .5) * 1000:7.2f} ms"
                         f" p99 {percentile(phase.first_tokens, .99) * 1000:7.2f} ms" if phase.stream else "")
                      + (f"  errors {phase.errors}" if phase.errors else ""))
                calls = max(len(phase.latencies), 1)
                print("    CPU ms a call: " + ", ".join(f"{name} {used / calls * 1000:.2f}"
                                                       for name, used in phase.cpu_seconds.items())
                      + f"; all of them {sum(phase.cpu_seconds.values()) / calls * 1000:.2f}"
                      + f" ({sum(phase.cpu_seconds.values()) / phase.seconds:.2f} cores busy); the whole machine "
                      + f"{phase.machine_seconds / calls * 1000:.2f} ({phase.machine_seconds / phase.seconds:.2f} "
                      + "cores busy: PostgreSQL, Redis and other sessions too)")
            time.sleep(3)  # the last batches reach the database
        calls = sum(len(p.latencies) for p in phases[1::2])
        metered = UsageEvent.objects.count()
        print(f"metered events: {metered:,} (the gateway's phases made {calls:,} measured calls plus warm-ups)")
        print("\nwhat the gateway adds (gateway − direct), targets: p50 ≤ 3 ms, p99 ≤ 15 ms, throughput ≥ 50 %")
        for direct, gateway in ((phases[0], phases[1]), (phases[2], phases[3])):
            added_p50 = (percentile(gateway.latencies, .5) - percentile(direct.latencies, .5)) * 1000
            added_p99 = (percentile(gateway.latencies, .99) - percentile(direct.latencies, .99)) * 1000
            ratio = gateway.throughput / direct.throughput if direct.throughput else float("nan")
            verdict = "PASS" if added_p50 <= 3 and added_p99 <= 15 and ratio >= 0.5 else "MISS"
            line = (f"{'stream' if gateway.stream else 'plain':<7} added p50 {added_p50:6.2f} ms  "
                    f"added p99 {added_p99:6.2f} ms  throughput {ratio * 100:5.1f} % of direct")
            if gateway.stream:
                added_ttft = (statistics.median(gateway.first_tokens) - statistics.median(direct.first_tokens)) * 1000
                line += f"  first token +{added_ttft:.2f} ms (p50)"
            print(f"{line}  {verdict}")


if __name__ == "__main__":
    main()
