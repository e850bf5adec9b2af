"""Benchmark the RAM policy evaluator (portal.ram.evaluator).

Run from the project root with ``python bench/ram_evaluator.py [runs]``, or import it and call
``run_benchmark()``. The principal has 10 policies of 10 statements each, mixing wildcards,
NotAction/NotResource, Deny statements and conditions (IpAddress, NotIpAddress, StringLike,
DateLessThan, Bool, NumericLessThanEquals). Reported: microseconds per decision (median and p99)
for an allowed, an implicitly denied and an explicitly denied request, both with precompiled
policies and with raw ``Policy`` objects (the cached-compilation path the app uses when it
re-reads policies from the database), plus the time to validate and to compile one policy.
Figures only: nothing here asserts on timings.
"""

import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: bench/ is on sys.path, the project root is not
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portal.ram.evaluator import (
    DECISION_ALLOW,
    DECISION_EXPLICIT_DENY,
    DECISION_IMPLICIT_DENY,
    AccessRequest,
    Policy,
    compile_policy,
    evaluate,
    validate_policy_document,
)

ORG = 42
POLICY_COUNT = 10
DEFAULT_RUNS = 20_000
COMPILE_RUNS = 2_000


def make_document(n: int) -> dict[str, Any]:
    """Ten statements; ``n`` varies ids and patterns so that no two policies share compiled parts."""
    office = f"10.{n % 250}.0.0/16"
    return {
        "Version": "1",
        "Statement": [
            {
                "Sid": "ReadOwnKeys",
                "Effect": "Allow",
                "Action": ["keys:List*", "keys:Get?ey"],
                "Resource": f"acs:keys:*:{ORG}:apikey/{n}*",
                "Condition": {"IpAddress": {"acs:SourceIp": [office, "2001:db8::/32"]}},
            },
            {
                "Effect": "Allow",
                "Action": "usage:Query*",
                "Resource": [f"acs:usage:*:{ORG}:department/{n}", f"acs:usage:*:{ORG}:department/{n + 100}"],
                "Condition": {"StringLike": {"usage:DepartmentId": [f"{n}*", "shared-*"]}},
            },
            {
                "Effect": "Allow",
                "Action": "aicontent:ModelRouter*",
                "Resource": "*",
                "Condition": {
                    "DateLessThan": {"acs:CurrentTime": f"20{30 + n % 60}-01-01T00:00:00Z"},
                    "Bool": {"acs:SecureTransport": True},
                },
            },
            {
                "Effect": "Allow",
                "Action": f"billing:GetInvoice{n}",
                "Resource": f"acs:billing:*:{ORG}:invoice/*",
            },
            {
                "Sid": "NoDeleteOutsideOffice",
                "Effect": "Deny",
                "Action": ["keys:Delete*", f"keys:Revoke{n}"],
                "Resource": f"acs:keys:*:{ORG}:*",
                "Condition": {"NotIpAddress": {"acs:SourceIp": office}},
            },
            {
                "Effect": "Allow",
                "NotAction": ["keys:*", "billing:*", "usage:*", "aicontent:*"],
                "Resource": f"acs:misc:*:{ORG}:thing/{n}",
            },
            {
                "Effect": "Deny",
                "Action": "*",
                "NotResource": [f"acs:*:*:{ORG}:*", "acs:public:*"],
            },
            {
                "Effect": "Allow",
                "Action": "usage:Export*",
                "Resource": f"acs:usage:*:{ORG}:department/*",
                "Condition": {"NumericLessThanEquals": {"usage:DepartmentId": 1000 + n}},
            },
            {
                "Effect": "Deny",
                "Action": "*:*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"acs:CurrentTime": 946684800 + n}},  # before 2000
            },
            {
                "Effect": "Allow",
                "Action": f"keys:Rotate{n}?",
                "Resource": f"acs:keys:*:{ORG}:apikey/*",
                "Condition": {"Bool": {"acs:MFAPresent": "true"}},
            },
        ],
    }


def make_policies(offset: int = 0) -> list[Policy]:
    return [Policy(f"policy-{offset + n}", make_document(offset + n)) for n in range(POLICY_COUNT)]


CONTEXT = {
    "acs:SourceIp": "203.0.113.9",
    "acs:CurrentTime": "2026-06-01T12:00:00+08:00",
    "acs:SecureTransport": True,
    "acs:MFAPresent": False,
    "usage:DepartmentId": "9",
}
SCENARIOS: list[tuple[str, AccessRequest, str]] = [
    (
        "allowed",
        AccessRequest("usage:QueryUsage", f"acs:usage:*:{ORG}:department/9", CONTEXT),
        DECISION_ALLOW,
    ),
    (
        "implicitly denied",
        AccessRequest("billing:RefundEverything", f"acs:billing:*:{ORG}:invoice/1", CONTEXT),
        DECISION_IMPLICIT_DENY,
    ),
    (
        "explicitly denied",
        AccessRequest("keys:DeleteKey", f"acs:keys:*:{ORG}:apikey/17", CONTEXT),
        DECISION_EXPLICIT_DENY,
    ),
]


def time_calls(call: Callable[[int], object], runs: int) -> list[float]:
    """Microseconds for each of ``runs`` calls of ``call(i)``, after a short warm-up."""
    for i in range(min(runs, 200)):
        call(i)
    gc.collect()
    samples: list[float] = []
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        call(i)
        samples.append((clock() - start) / 1000)
    return samples


def summarise(samples: list[float]) -> dict[str, float]:
    return {"median_us": statistics.median(samples), "p99_us": statistics.quantiles(samples, n=100)[98]}


def run_benchmark(runs: int = DEFAULT_RUNS, compile_runs: int = COMPILE_RUNS) -> dict[str, dict[str, float]]:
    policies = make_policies()
    compiled = [compile_policy(policy) for policy in policies]
    results: dict[str, dict[str, float]] = {}

    for label, request, expected in SCENARIOS:
        for form, policy_set in (("precompiled", compiled), ("raw Policy, cached", policies)):
            name = f"evaluate {label} ({form})"
            print(f"running: {name} x {runs}", flush=True)
            effect = evaluate(policy_set, request).effect
            if effect != expected:  # the scenario itself is wrong, so its figure would be meaningless
                raise RuntimeError(f"{name}: expected {expected}, got {effect}")
            results[name] = summarise(time_calls(lambda _i, ps=policy_set, r=request: evaluate(ps, r), runs))

    # Distinct documents per run: every compilation is a cache miss, as for a policy seen first.
    fresh = [Policy(f"fresh-{i}", make_document(1000 + i)) for i in range(compile_runs + 200)]
    print(f"running: validate one policy x {compile_runs}", flush=True)
    results["validate one policy"] = summarise(
        time_calls(lambda i: validate_policy_document(fresh[i].document), compile_runs)
    )
    print(f"running: compile one policy, cold x {compile_runs}", flush=True)
    results["compile one policy (cold)"] = summarise(time_calls(lambda i: compile_policy(fresh[i]), compile_runs))
    print(f"running: compile one policy, cached x {runs}", flush=True)
    results["compile one policy (cached)"] = summarise(time_calls(lambda _i: compile_policy(policies[0]), runs))
    return results


def main(argv: list[str]) -> None:
    runs = int(argv[1]) if len(argv) > 1 else DEFAULT_RUNS
    statements = sum(len(policy.document["Statement"]) for policy in make_policies())
    print(f"RAM evaluator benchmark: {POLICY_COUNT} policies, {statements} statements, Python {sys.version.split()[0]}")
    results = run_benchmark(runs)
    width = max(len(name) for name in results)
    print()
    print(f"{'scenario':<{width}}  {'median us':>10}  {'p99 us':>10}")
    for name, figures in results.items():
        print(f"{name:<{width}}  {figures['median_us']:>10.2f}  {figures['p99_us']:>10.2f}")


if __name__ == "__main__":
    main(sys.argv)
