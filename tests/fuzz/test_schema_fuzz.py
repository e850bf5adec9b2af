"""A client generated from our OpenAPI schema finds no 5xx and no broken promise (issue 14).

schemathesis reads /api/schema/ from a live server seeded with the fuzzer's own organization
(tests/fuzz/world.py) and calls every operation with generated requests, valid (positive) and
invalid (negative), with every check on: no 5xx, each status code documented, each body and
header as the schema says, invalid input refused, valid input accepted, and so on.

Credentials are real: the owner's management key everywhere, the service token where the
gateway calls (ingestion, key verification, credit grants). Path parameters of valid requests
name the organization's own objects (a key, a member, a policy, a budget, a webhook, an
invoice), and valid ingestion batches carry the organization's key and a catalog model, so the
handlers behind the 404 are reached too.

The budget is CI-sized (FUZZ_EXAMPLES examples per operation and mode, 10 by default, plus the
coverage phase's boundary cases) with a
fixed seed (FUZZ_SEED); `make fuzz` runs the same test with FUZZ_EXAMPLES=100. A summary of
operations, cases, failures and duration is printed and written to test-artifacts/fuzz.json."""

import json
import os
import time
from collections import Counter
from pathlib import Path

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode

from tests.fuzz.world import FuzzWorld, seed_fuzz_world

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("FUZZ_SEED", "14"))
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "fuzz.json"
# The gateway's own calls: the service token, not a member's key.
SERVICE_OPERATIONS = {("POST", "/api/v1/usage/events"), ("POST", "/api/v1/gateway/keys/verify"),
                      ("POST", "/api/v1/billing/credit-grants"), ("GET", "/api/v1/gateway/upstreams"),
                      ("POST", "/api/v1/gateway/upstreams"), ("DELETE", "/api/v1/gateway/upstreams/{upstream_id}")}

CASES: Counter = Counter()
DOCUMENTED: set[str] = set()  # "METHOD /path" of every operation the schema lists
FAILURES: dict[str, list[str]] = {}


@pytest.fixture
def fuzz_world(transactional_db, live_server, settings) -> FuzzWorld:
    settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS = True
    return seed_fuzz_world()


@pytest.fixture
def api_schema(fuzz_world, live_server, request):
    # schemathesis 4.32's lazy loader renames the running test through `_nodeid`, which pytest 9's
    # nodes no longer carry: give it one to read.
    request.node._nodeid = request.node.nodeid
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    DOCUMENTED.update(f"{method.upper()} {path}" for path, operations in schema.raw_schema["paths"].items()
                      for method in operations if method in ("get", "post", "put", "patch", "delete"))
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=EXAMPLES, deterministic=False)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


def _positive(case, location: str) -> bool:
    meta = case._meta
    component = meta.components.get(location) if meta is not None else None
    return component is None or component.mode == GenerationMode.POSITIVE


DAY = 86400
# Rules between parameters that OpenAPI cannot state (each is in the operation's description): a
# valid request keeps them, so valid requests below are nudged into them after generation.
RANGES = {  # path prefix: (start, end, longest span in seconds, the values' kind)
    "/api/v1/modelRouter/": ("startTime", "endTime", 31 * DAY, "epoch"),
    "/api/v1/portal/management/usage": ("start_time", "end_time", 366 * DAY, "epoch"),
    "/api/v1/obs/usage": ("start_date", "end_date", 366 * DAY, "date"),
    "/api/v1/billing/usage-analytics": ("startDate", "endDate", 90 * DAY, "instant"),
    "/api/v1/billing/usage-history": ("startTimestamp", "endTimestamp", None, "instant"),
    "/api/v1/billing/usage": ("startDate", "endDate", None, "instant"),
}
# Where a valid request can still be refused for what no schema can say (objects it names that
# do not exist, the policy grammar's action names, a credit note above its invoice, ...), the
# check that valid data is accepted is off; every other check stays on. The reason is beside each.
SEMANTIC_REFUSALS = {
    ("POST", "/api/v1/gateway/keys"): "team_id must name one of the organization's departments (422)",
    ("PUT", "/api/v1/gateway/keys/{key_id}"): "models_allowed must name catalog models (422)",
    ("POST", "/api/v1/billing/budgets"): "target_id must name the organization's department or key; thresholds "
                                         "ascending (422)",
    ("PUT", "/api/v1/billing/budgets/{budget_id}"): "thresholds ascending (their distinctness is uniqueItems)",
    ("POST", "/api/v1/billing/invoices/{invoice_id}/credit-notes"): "credit notes never add up to more than the "
                                                                    "invoice's amount (422)",
    ("GET", "/api/v1/billing/invoices/{invoice_id}/lines/{line_id}/events"): "a cursor is one this line issued",
    ("POST", "/api/v1/ram/policies"): "a policy document's grammar: actions, resources, condition operators",
    ("PUT", "/api/v1/ram/policies/{name}"): "a policy document's grammar; system policies are immutable",
    ("DELETE", "/api/v1/ram/policies/{name}"): "system policies are immutable (422)",
    ("POST", "/api/v1/ram/simulate"): "member must name one of the organization's members (422)",
    ("POST", "/api/v1/usage/events"): "key_id and model must name a key and a catalog model (422 per event)",
    ("POST", "/calls/stats"): "wb_user_ids must name members; end defaults to now, so start must be earlier",
    ("GET", "/api/v1/obs/usage"): "team_id, key_id and model must name the organization's objects (422)",
    ("GET", "/api/v1/modelRouter/open/billing/cost/model-detail"): "a token continues only the query it came from",
    ("GET", "/api/v1/modelRouter/open/billing/cost/models"): "a token continues only the query it came from",
    ("GET", "/api/v1/modelRouter/open/billing/cost/breakdown"): "a token continues only the query it came from",
    ("GET", "/api/v1/modelRouter/open/billing/cost/trend"): "clientId or clientIds, not both; apiKeyId needs clientId",
    ("GET", "/api/v1/modelRouter/open/billing/cost/overview"): "clientId or clientIds, not both; apiKeyId needs "
                                                               "clientId",
    ("GET", "/api/v1/billing/usage-analytics"): "lookback or both dates, never one date alone",
    ("GET", "/api/v1/billing/usage-history"): "a cursor is one this endpoint issued, and a continuation sends it "
                                              "alone: the filters travel inside it (400)",
    ("POST", "/api/v1/gateway/upstreams"): "models must name catalog models no other upstream serves; names are "
                                           "unique (422)",
    ("POST", "/api/v1/billing/credit-grants"): "org_id must name an organization (422)",
    ("POST", "/api/v1/billing/webhooks"): "the URL's host must resolve (and to a public address in production)",
}


def aim_at_real_objects(case, world: FuzzWorld) -> None:
    """Valid requests name the organization's own objects, so that they reach the handler."""
    if _positive(case, "path"):
        real = {"key_id": world.key_uuid, "member_uuid": world.spare_member_uuid, "name": world.policy_name,
                "budget_id": world.budget_uuid, "webhook_id": world.webhook_uuid,
                "upstream_id": world.upstream_uuid}
        if world.invoice_uuid:
            real |= {"invoice_id": world.invoice_uuid, "line_id": world.invoice_line_uuid}
        if case.path.endswith("/revoke"):
            real["key_id"] = world.spare_management_key_id
        for name in case.path_parameters or {}:
            if name in real:
                case.path_parameters[name] = real[name]
    if _positive(case, "body") and case.path == "/api/v1/usage/events" and isinstance(case.body, dict):
        for event in case.body.get("events") or []:
            if isinstance(event, dict):
                event["key_id"], event["model"] = world.key_uuid, world.model_code
    if _positive(case, "body") and case.path == "/api/v1/gateway/upstreams" and isinstance(case.body, dict):
        case.body["models"] = [world.spare_model_code]
    if _positive(case, "body") and case.path == "/calls/stats" and isinstance(case.body, dict):
        case.body["project_id"] = world.organization_uuid


def keep_the_rules_between_parameters(case) -> None:
    from datetime import UTC, datetime, timedelta

    if not _positive(case, "query") or not isinstance(case.query, dict):
        return
    for prefix, (start_name, end_name, longest, kind) in RANGES.items():
        if not case.path.startswith(prefix) or start_name not in case.query or end_name not in case.query:
            continue
        if kind == "epoch":
            start = int(case.query[start_name])
            end = int(case.query[end_name])
            if end <= start or (longest and end - start > longest):
                case.query[end_name] = min(start + DAY, 7258118399) if start < 7258118399 - DAY else start
                if case.query[end_name] <= start:
                    case.query[start_name] = start - DAY
            return
        parse = datetime.fromisoformat
        try:
            start = parse(str(case.query[start_name]))
            end = parse(str(case.query[end_name]))
            start = start if start.tzinfo else start.replace(tzinfo=UTC)
            end = end if end.tzinfo else end.replace(tzinfo=UTC)
        except ValueError:
            return
        if end <= start or (longest and (end - start).total_seconds() > longest):
            if start.year >= 2199:
                start = start.replace(year=2100)
                case.query[start_name] = start.date().isoformat() if kind == "date" else start.isoformat()
            moved = start + timedelta(days=1)
            case.query[end_name] = moved.date().isoformat() if kind == "date" else moved.isoformat()
        return


@schema.parametrize()
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.seed(SEED)
def test_the_schema_and_the_code_agree(case, fuzz_world, live_server, http_session):
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    aim_at_real_objects(case, fuzz_world)
    keep_the_rules_between_parameters(case)
    operation = (case.method.upper(), case.path)
    token = fuzz_world.service_token if operation in SERVICE_OPERATIONS else fuzz_world.owner_key
    CASES[f"{case.method.upper()} {case.path}"] += 1
    try:
        case.call_and_validate(base_url=live_server.url, session=http_session,
                               headers={"Authorization": f"Bearer {token}"},
                               excluded_checks=[positive_data_acceptance] if operation in SEMANTIC_REFUSALS else None)
    except BaseException as failure:
        FAILURES.setdefault(f"{case.method.upper()} {case.path}", []).append(str(failure)[:2000])
        raise


@pytest.fixture(scope="module")
def http_session():
    session = requests.Session()
    started = time.monotonic()
    yield session
    session.close()
    documented = {key for key in CASES if key in DOCUMENTED}
    summary = {"operations": len(documented), "cases": sum(CASES.values()),
               "cases_on_undocumented_methods": sum(n for key, n in CASES.items() if key not in DOCUMENTED),
               "failing_operations": len(FAILURES), "failures": sum(len(v) for v in FAILURES.values()),
               "seconds": round(time.monotonic() - started, 1), "examples_per_operation_and_mode": EXAMPLES,
               "seed": SEED, "per_operation": dict(sorted(CASES.items())),
               "failure_samples": {op: found[:3] for op, found in sorted(FAILURES.items())}}
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"\nfuzz: {summary['operations']} operations, {summary['cases']} cases, {summary['failures']} failures "
          f"in {summary['failing_operations']} operations, {summary['seconds']} s (seed {SEED}, "
          f"{EXAMPLES} examples per operation and mode)")
