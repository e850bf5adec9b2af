"""Alibaba ModelRouter dialect: the cost pages recomputed from raw events, both paging styles,
signed tokens, RAM per department and the vendor's error codes."""

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from portal.ram import services as ram
from portal.services import SYSTEM
from tests.api_helpers import client_for

BASE = "/api/v1/modelRouter/open/billing/cost/"


@pytest.fixture
def alice(history):
    return client_for(history.world.alice)


def decode(values: str) -> dict:
    return json.loads(json.loads(values), parse_float=Decimal)


def window(history, days: int):
    zone = history.world.acme.zone
    today = history.now.astimezone(zone).date()
    start = datetime.combine(today - timedelta(days=days - 1), datetime.min.time(), tzinfo=zone)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return int(start.timestamp()), int(end.timestamp())


def acme_events(history, start, end, **where):
    events = [e for e in history.events if e.organization_id == history.world.acme.pk
              and start <= e.timestamp.timestamp() < end]
    for name, allowed in where.items():
        events = [e for e in events if getattr(e, name) in allowed]
    return events


def ok(response) -> dict:
    body = response.json()
    assert response.status_code == 200, body
    assert body["success"] is True and body["httpStatusCode"] == 200 and body["requestId"]
    return body


def test_overview_totals_with_department_and_model_type_filters(history, alice):
    start, end = window(history, 10)
    world = history.world
    body = ok(alice.get(BASE + "overview", {"startTime": start, "endTime": end,
                                            "clientIds": f"{world.research.pk},{world.support.pk}",
                                            "modelTypes": "llm"}))
    events = acme_events(history, start, end, department_id={world.research.pk, world.support.pk})
    events = [e for e in events if e.model.modality == "llm"]
    metrics = {item["key"]: item for item in body["data"]}
    assert metrics["total_calls"]["value"] == len(events) and metrics["total_calls"]["label"] == "调用次数"
    assert metrics["total_calls"]["unit"] == "次" and metrics["total_amount"]["unit"] == "元"
    assert Decimal(str(metrics["total_amount"]["value"])) == sum(e.cost for e in events)
    assert metrics["input_tokens"]["value"] == sum(e.prompt_tokens for e in events)
    assert metrics["image_count"]["value"] == 0  # images are not llm


def test_hourly_trend_covers_every_hour_of_the_day(history, alice):
    zone = history.world.acme.zone
    day = history.now.astimezone(zone).date() - timedelta(days=1)
    start = int(datetime.combine(day, datetime.min.time(), tzinfo=zone).timestamp())
    body = ok(alice.get(BASE + "trend", {"startTime": start, "endTime": start + 86400}))
    data = body["data"]
    assert data["granularity"] == "hourly" and data["defaultMetric"] == "total_amount"
    assert [p["timestamp"] for p in data["points"]] == [start + 3600 * h for h in range(24)]
    for point in data["points"]:
        values = decode(point["values"])
        events = acme_events(history, point["timestamp"], point["timestamp"] + 3600)
        assert values["total_calls"] == len(events) and values["timestamp"] == point["timestamp"]
        assert values["total_amount"] == sum((e.cost for e in events), Decimal(0))


def _walk(client, path, params, style):
    rows, seen_tokens, page = [], set(), 1
    token = None
    while True:
        query = dict(params)
        if style == "token":
            query["maxResults"] = 7
            if token:
                query["nextToken"] = token
        else:
            query.update({"pageIndex": page, "pageSize": 7})
        body = ok(client.get(BASE + path, query))
        rows.extend(body["data"]["rows"])
        if style == "token":
            token = body["nextToken"]
            assert token not in seen_tokens
            seen_tokens.add(token)
            if not token:
                return rows, body
        else:
            if len(body["data"]["rows"]) < 7:
                return rows, body
            page += 1


@pytest.mark.parametrize("style", ["token", "page"])
def test_model_detail_pages_find_every_day_once(history, alice, style):
    start, end = window(history, 30)
    model = history.models[0]
    rows, last = _walk(alice, "model-detail", {"startTime": start, "endTime": end, "modelId": model.pk}, style)
    assert [r["timestamp"] for r in rows] == sorted({r["timestamp"] for r in rows}) and len(rows) == 30
    assert last["data"]["total"] == 30 and last["data"]["modelName"] == model.name
    for row in rows:
        events = [e for e in acme_events(history, row["timestamp"], row["timestamp"] + 86400)
                  if e.model_id == model.pk]
        assert decode(row["values"])["total_calls"] == len(events)


@pytest.mark.parametrize("style", ["token", "page"])
def test_breakdown_rows_match_and_each_appears_once(history, alice, style):
    start, end = window(history, 5)
    rows, last = _walk(alice, "breakdown", {"startTime": start, "endTime": end}, style)
    keys = [(r["summaryTime"], r["clientId"], r["apiKeyId"], r["memberUserId"], r["modelId"]) for r in rows]
    assert len(keys) == len(set(keys)) == last["data"]["total"]
    expected = defaultdict(list)
    zone = history.world.acme.zone
    for e in acme_events(history, start, end):
        day = e.timestamp.astimezone(zone).date()
        day_start = int(datetime.combine(day, datetime.min.time(), tzinfo=zone).timestamp())
        expected[(day_start, e.department_id, e.key_id, e.member_id, e.model_id)].append(e)
    non_empty = {k: r for k, r in zip(keys, rows, strict=True) if r["clientId"] is not None}
    assert set(non_empty) == set(expected)
    for key, row in non_empty.items():
        events = expected[key]
        assert Decimal(str(row["payableAmount"])) == sum(e.cost for e in events)
        assert decode(row["values"])["total_calls"] == len(events)
        assert row["clientName"] and row["modelCode"] and row["memberUserName"]
    days_with_rows = {k[0] for k in keys}
    assert len(days_with_rows) == 5  # every bucket is present, empty ones as zero rows


def _expected_breakdown(history, start, end, bucket_of, bucket_starts, **where):
    """Every breakdown row the raw events make, in the page order: by bucket, then department,
    key, member (none first) and model; an empty bucket as one zero row."""
    groups = defaultdict(list)
    for e in acme_events(history, start, end, **where):
        groups[(bucket_of(e), e.department_id, e.key_id, e.member_id, e.model_id)].append(e)
    rows = []
    for bucket_start in bucket_starts:
        mine = sorted((key for key in groups if key[0] == bucket_start),
                      key=lambda key: (key[1], key[2], key[3] or 0, key[4]))
        rows.extend(mine or [(bucket_start, None, None, None, None)])
    return rows, groups


@pytest.mark.parametrize("style", ["token", "page"])
@pytest.mark.parametrize("shape", ["days", "days-off-grid", "hours", "one-department"])
def test_breakdown_pages_walk_the_raw_events_in_order(history, alice, style, shape):
    """The rows of every page, their order, the total and each row's sums equal the raw events:
    whole days (the key-daily level), a range starting and ending off the 15-minute grid (raw
    events at both ends, the fine level between), hours (the fine level) and a department filter."""
    world, zone = history.world, history.world.acme.zone
    start, end = window(history, 6)
    params = {}
    if shape == "days-off-grid":
        start, end = start + 7 * 3600 + 421, end - 5 * 3600 - 17
    if shape == "hours":
        start, end = end - 2 * 86400, end - 86400
        params["granularity"] = "hourly"
    where = {}
    if shape == "one-department":
        params["clientId"] = world.research.pk
        where["department_id"] = {world.research.pk}
    if shape == "hours":
        starts = list(range(start, end, 3600))

        def bucket_of(e):
            return start + (int(e.timestamp.timestamp()) - start) // 3600 * 3600
    else:
        first_day = datetime.fromtimestamp(start, tz=zone).date()
        last_day = datetime.fromtimestamp(end - 1, tz=zone).date()
        starts = [int(datetime.combine(first_day + timedelta(days=n), datetime.min.time(), tzinfo=zone).timestamp())
                  for n in range((last_day - first_day).days + 1)]

        def bucket_of(e):
            day = e.timestamp.astimezone(zone).date()
            return int(datetime.combine(day, datetime.min.time(), tzinfo=zone).timestamp())
    expected, groups = _expected_breakdown(history, start, end, bucket_of, starts, **where)
    assert len(groups) > 14  # several pages of seven
    rows, last = _walk(alice, "breakdown", {"startTime": start, "endTime": end, **params}, style)
    assert [(r["summaryTime"], r["clientId"], r["apiKeyId"], r["memberUserId"], r["modelId"]) for r in rows] == \
        expected
    assert last["data"]["total"] == len(expected)
    for row in rows:
        events = groups.get((row["summaryTime"], row["clientId"], row["apiKeyId"], row["memberUserId"],
                             row["modelId"]), [])
        assert Decimal(str(row["payableAmount"])) == sum((e.cost for e in events), Decimal(0))
        assert decode(row["values"])["total_calls"] == len(events)
        assert decode(row["values"])["input_tokens"] == sum(e.prompt_tokens for e in events)


def test_models_list_and_search(history, alice):
    start, end = window(history, 10)
    body = ok(alice.get(BASE + "models", {"startTime": start, "endTime": end}))
    data = body["data"]
    assert data["idField"] == "model_id" and data["nameField"] == "model_name"
    amounts = [decode(r["values"])["total_amount"] for r in data["rows"]]
    assert amounts == sorted(amounts, reverse=True)
    found = ok(alice.get(BASE + "models", {"startTime": start, "endTime": end, "search": "deepseek"}))["data"]
    assert [r["modelCode"] for r in found["rows"]] == ["deepseek-chat"]


def test_a_tampered_or_foreign_token_is_a_parameter_error(history, alice):
    start, end = window(history, 30)
    params = {"startTime": start, "endTime": end, "modelId": history.models[0].pk, "maxResults": 5}
    token = ok(alice.get(BASE + "model-detail", params))["nextToken"]
    tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (tampered, "garbage"):
        response = alice.get(BASE + "model-detail", {**params, "nextToken": bad})
        body = response.json()
        assert response.status_code == 400 and body["errCode"] == "B.Param.Invalid"
        assert "nextToken" in body["errMessage"]
    other = alice.get(BASE + "model-detail", {**params, "modelId": history.models[1].pk, "nextToken": token})
    assert other.status_code == 400


@pytest.mark.parametrize("params, name", [
    ({"endTime": 10}, "startTime"), ({"startTime": 10, "endTime": 5}, "endTime"),
    ({"startTime": 0, "endTime": 10, "clientId": 1, "clientIds": "1,2"}, "clientIds"),
    ({"startTime": 0, "endTime": 10, "apiKeyId": 3}, "apiKeyId"),
    ({"startTime": 0, "endTime": 10, "granularity": "weekly"}, "granularity"),
    ({"startTime": 0, "endTime": 10, "maxResults": 101}, "maxResults"),
    ({"startTime": 0, "endTime": 10, "pageSize": 501}, "pageSize"),
    ({"startTime": 0, "endTime": 10, "modelTypes": "llm,teleport"}, "modelTypes"),
    ({"startTime": 0, "endTime": 40 * 86400, "granularity": "hourly"}, "endTime"),
    ({"startTime": 0, "endTime": 10, "memberUserIds": "1,x"}, "memberUserIds"),
    ({"startTime": 0, "endTime": 10, "page": 0}, "page"),
    ({"startTime": 0, "endTime": 10, "pageIndex": -1}, "pageIndex"),
    ({"startTime": 0, "endTime": 10, "clientIds": "1,,2"}, "clientIds"),
    ({"startTime": "x", "endTime": 10}, "startTime")],
    ids=["no-start", "reversed", "both-client-params", "key-without-client", "bad-granularity",
         "max-results", "page-size", "model-type", "hourly-too-long", "member-ids", "page-0", "page-index",
         "client-ids", "start-not-a-number"])
def test_bad_parameters_are_b_param_invalid(history, alice, params, name):
    response = alice.get(BASE + "breakdown", params)
    body = response.json()
    assert response.status_code == 400 and body["success"] is False and body["errCode"] == "B.Param.Invalid"
    assert name in body["errMessage"] and body["httpStatusCode"] == 400 and body["data"] is None


def test_model_detail_needs_a_known_model(history, alice):
    start, end = window(history, 2)
    assert alice.get(BASE + "model-detail", {"startTime": start, "endTime": end}).json()["errCode"] == \
        "B.Param.Invalid"
    assert alice.get(BASE + "model-detail", {"startTime": start, "endTime": end, "modelId": 999999}).status_code \
        == 404


def test_ram_per_department(history):
    world = history.world
    start, end = window(history, 3)
    policy = ram.create_policy(actor=SYSTEM, organization=world.acme, name="SupportCost", document={
        "Version": "1", "Statement": [{"Effect": "Allow", "Action": "aicontent:ModelRouterQueryCostModelDetail",
                                       "Resource": f"acs:usage:*:{world.acme.pk}:department/{world.support.pk}"}]})
    ram.attach_policy(actor=SYSTEM, policy=policy, member=world.dora)
    dora = client_for(world.dora)
    params = {"startTime": start, "endTime": end, "modelId": history.models[0].pk}
    assert ok(dora.get(BASE + "model-detail", {**params, "clientId": world.support.pk}))
    for denied in ({**params, "clientId": world.research.pk}, params):
        response = dora.get(BASE + "model-detail", denied)
        assert response.status_code == 403 and response.json()["errCode"] == "B.Permission.DeniedException"
    bob = client_for(world.bob)  # usage read-only: allowed
    assert bob.get(BASE + "model-detail", params).status_code == 200
    assert dora.get(BASE + "tabs").status_code == 200  # tabs need no policy
    charlie = client_for(world.charlie)
    foreign = charlie.get(BASE + "overview", {"startTime": start, "endTime": end, "clientId": world.research.pk})
    assert foreign.status_code == 404


def test_no_organization_is_org_no_exist(history):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client = APIClient()
    client.force_authenticate(root)
    response = client.get(BASE + "tabs")
    assert response.status_code == 403 and response.json()["errCode"] == "B.Permission.OrgNoExistException"
    assert APIClient().get(BASE + "tabs").status_code == 401


def test_tabs_list_model_types(history, alice):
    tabs = ok(alice.get(BASE + "tabs"))["data"]
    assert {"key", "label", "modelTypes"} == set(tabs[0]) and any(t["modelTypes"] == ["llm"] for t in tabs)


def test_the_envelope_matches_the_seed(history, alice):
    start, end = window(history, 1)
    body = ok(alice.get(BASE + "model-detail", {"startTime": start, "endTime": end,
                                                "modelId": history.models[0].pk, "maxResults": 100}))
    assert set(body) == {"requestId", "success", "errCode", "errMessage", "httpStatusCode", "data", "maxResults",
                         "nextToken"}
    assert body["maxResults"] == 100 and body["nextToken"] == "" and body["data"]["total"] == 24  # hourly
    assert set(body["data"]) == {"columns", "granularity", "modelId", "modelName", "page", "pageSize", "rows",
                                 "total"}
    assert body["data"]["columns"][0] == {"key": "total_calls", "label": "调用次数", "sortable": True, "unit": "次"}
    assert isinstance(body["data"]["rows"][0]["values"], str)


def test_now_based_end_of_range_is_fine(history, alice):
    now = int(datetime.now(UTC).timestamp())
    assert ok(alice.get(BASE + "overview", {"startTime": now - 600, "endTime": now}))
