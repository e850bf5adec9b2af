"""The usage explorer (API.md §11, `/usage/` and `/usage/export.csv`): the table's rows recomputed
from the events the test sends, the CSV equal to the table, the department decided like the API."""

import csv
import io
import re
from collections import defaultdict
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.utils import timezone

from billing.services import record_usage
from portal.ram import services as ram
from portal.services import SYSTEM
from tests import factories
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_usage(ram_world):
    """Research (alice's key) calls qwen today and three days ago; Support calls deepseek yesterday
    (one error); Globex has its own."""
    world, now = ram_world, timezone.now()
    qwen = factories.make_model("qwen-test", cny=("2", "0.5", "8", "0", "0"))
    deepseek = factories.make_model("deepseek-test", cny=("1", "0.2", "2", "0", "0"))
    research_key, _ = factories.make_inference_key(world.research, name="research-app", owner=world.alice)
    support_key, _ = factories.make_inference_key(world.support, name="support-bot")
    sales_key, _ = factories.make_inference_key(world.sales, name="globex-sales")
    record_usage([
        factories.event(research_key, qwen, timestamp=(now - timedelta(minutes=5)).isoformat(),
                        prompt_tokens=300_000, completion_tokens=100_000),
        factories.event(research_key, qwen, timestamp=(now - timedelta(days=3)).isoformat(),
                        prompt_tokens=200_000, completion_tokens=50_000),
        factories.event(support_key, deepseek, timestamp=(now - timedelta(days=1)).isoformat(),
                        prompt_tokens=2_000_000, completion_tokens=500_000),
        factories.event(support_key, deepseek, timestamp=(now - timedelta(days=1)).isoformat(),
                        prompt_tokens=10, completion_tokens=0, status_code=429, error_type="rate_limit"),
        factories.event(sales_key, deepseek, timestamp=(now - timedelta(minutes=5)).isoformat(),
                        prompt_tokens=7_777_777, completion_tokens=0),
    ])
    world.today = now.astimezone(world.acme.zone).date()
    return world


def money(amount) -> str:
    return str(Decimal(amount).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def table_rows(html: str) -> list[list[str]]:
    """The explorer table's cells: a day as its ISO date, an amount as its decimal string, numbers
    without grouping."""
    table = html.split('data-testid="usage-table"')[1].split("</table>")[0]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S):
        cells = []
        for cell in re.findall(r"<td([^>]*)>(.*?)</td>", row, re.S):
            attributes, text = cell
            amount = re.search(r'data-amount="([^"]+)"', attributes)
            day = re.search(r'datetime="([^"]+)"', text)
            cells.append(amount.group(1) if amount else day.group(1) if day else
                         re.sub(r"<[^>]+>", "", text).strip().replace(",", ""))
        rows.append(cells)
    return rows


def csv_rows(response) -> list[list[str]]:
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def acme_events(world, **lookup):
    return list(UsageEvent.objects.filter(organization=world.acme, **lookup).select_related("model", "department"))


def test_the_default_is_the_last_7_days_by_day(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    response = client.get("/usage/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = table_rows(html)
    first = world.today - timedelta(days=6)
    assert [row[0] for row in rows] == [(first + timedelta(days=n)).isoformat() for n in range(7)]
    by_day = defaultdict(list)
    for event in acme_events(world):
        by_day[event.timestamp.astimezone(world.acme.zone).date().isoformat()].append(event)
    for row in rows:
        events = by_day.get(row[0], [])
        assert int(row[1]) == len(events)
        assert row[5] == money(sum((e.cost for e in events), Decimal(0)))
    assert 'data-chart="usage-chart"' in html and 'data-testid="export-csv"' in html


def test_grouped_by_model_the_table_and_the_chart_carry_each_models_numbers(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    html = client.get("/usage/", {"group_by": "model"}).content.decode()
    expected = defaultdict(list)
    for event in acme_events(world):
        expected[event.model.code].append(event)
    rows = table_rows(html)
    assert [row[0] for row in rows] == sorted(expected, key=lambda code: -sum(e.cost for e in expected[code]))
    for row in rows:
        events = expected[row[0]]
        assert int(row[1]) == len(events)
        assert int(row[2]) == sum(e.prompt_tokens for e in events)
        assert int(row[3]) == sum(e.completion_tokens for e in events)
        assert row[5] == money(sum(e.cost for e in events))
        assert int(row[6]) == sum(e.status_code >= 400 for e in events)
    spec = re.search(r'<script id="usage-chart" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert '"type": "bar"' in spec and '"money": "CNY"' in spec
    assert "globex" not in html.lower() and "Sales" not in html


def test_two_levels_model_then_day(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    rows = table_rows(client.get("/usage/", {"group_by": ["model", "day"]}).content.decode())
    expected = defaultdict(int)
    for event in acme_events(world):
        expected[(event.model.code, event.timestamp.astimezone(world.acme.zone).date().isoformat())] += 1
    assert {(row[0], row[1]): int(row[2]) for row in rows} == dict(expected)
    assert [row[0] for row in rows] == ["deepseek-test", "qwen-test", "qwen-test"]  # the costlier model first
    assert rows[1][1] < rows[2][1]  # days in order within a model


@pytest.mark.parametrize("group_by", [["day"], ["model"], ["department", "key"], ["member"], ["key", "day"]],
                         ids=["day", "model", "department-key", "member", "key-day"])
def test_the_csv_holds_exactly_the_rows_of_the_table(client, acme_usage, group_by):
    client.force_login(acme_usage.alice.user)
    params = {"group_by": group_by, "start_date": (acme_usage.today - timedelta(days=9)).isoformat()}
    table = table_rows(client.get("/usage/", params).content.decode())
    exported = csv_rows(client.get("/usage/export.csv", params))
    header, body = exported[0], exported[1:]
    assert header[len(group_by):] == ["requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost",
                                      "currency", "errors", "error_rate", "avg_latency_ms"]
    assert len(body) == len(table)
    width = len(group_by)
    for shown, row in zip(table, body, strict=True):
        shown_groups = [("" if value == "(none)" else value) for value in shown[:width]]
        assert row[:width] == shown_groups
        assert row[width:width + 5] == shown[width:width + 5]  # requests, tokens, cost
        assert row[width + 5] == "CNY"
        assert row[width + 6] == shown[width + 5]  # errors


def test_member_filter_and_names_not_ids(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    rows = table_rows(client.get("/usage/", {"group_by": "member", "member": str(world.alice.uuid)}).content.decode())
    assert rows and [row[0] for row in rows] == ["alice"]
    assert int(rows[0][1]) == len(acme_events(world, member=world.alice))
    rows = table_rows(client.get("/usage/", {"group_by": "key", "model": "deepseek-test"}).content.decode())
    assert [row[0] for row in rows] == ["support-bot"] and int(rows[0][1]) == 2


@pytest.mark.parametrize(("params", "message"), [
    ({"start_date": "2026-03-10", "end_date": "2026-03-01"}, "The last day comes before the first."),
    ({"start_date": "2026-01-01", "end_date": "2026-04-01"}, "At most 90 days at a time."),
    ({"start_date": "yesterday"}, "Enter a valid date."),
    ({"group_by": "colour"}, "Select a valid choice."),
    ({"group_by": ["day", "model", "key"]}, "Group by at most two things."),
    ({"model": "no-such-model"}, "Select a valid choice."),
], ids=["reversed", "too-long", "not-a-date", "unknown-group", "three-levels", "unknown-model"])
def test_validation_errors_are_shown_and_nothing_is_queried(client, acme_usage, params, message):
    client.force_login(acme_usage.alice.user)
    response = client.get("/usage/", params)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="form-errors"' in html and message in html
    assert 'data-testid="usage-table"' not in html and 'data-testid="export-csv"' not in html
    assert client.get("/usage/export.csv", params).status_code == 200  # the form again, not a CSV


def test_exactly_90_days_is_allowed(client, acme_usage):
    client.force_login(acme_usage.alice.user)
    first = acme_usage.today - timedelta(days=89)
    html = client.get("/usage/", {"start_date": first.isoformat(), "end_date": acme_usage.today.isoformat()}
                      ).content.decode()
    assert len(table_rows(html)) == 90


def test_table_pages_and_the_csv_has_every_page(client, acme_usage, monkeypatch):
    from portal.pages import usage

    monkeypatch.setattr(usage, "PAGE_SIZE", 3)
    client.force_login(acme_usage.alice.user)
    first = client.get("/usage/").content.decode()
    second = client.get("/usage/", {"page": 2}).content.decode()
    assert len(table_rows(first)) == 3 and 'rel="next"' in first
    exported = csv_rows(client.get("/usage/export.csv"))
    pages = [table_rows(client.get("/usage/", {"page": n}).content.decode()) for n in (1, 2, 3)]
    assert [row[0] for row in exported[1:]] == [row[0] for page in pages for row in page]
    assert table_rows(second)[0][0] != table_rows(first)[0][0]


def test_charlie_sees_none_of_acmes_numbers(client, acme_usage):
    world = acme_usage
    client.force_login(world.charlie.user)
    html = client.get("/usage/", {"group_by": ["department", "key"]}).content.decode()
    assert [row[:2] for row in table_rows(html)] == [["Sales", "globex-sales"]]
    assert "Research" not in html and "support-bot" not in html and "qwen-test" not in html.split("<table")[1]
    for name, value in (("team", str(world.research.uuid)), ("member", str(world.alice.uuid))):
        html = client.get("/usage/", {name: value}).content.decode()
        assert 'data-testid="form-errors"' in html and "Research" not in html
    exported = csv_rows(client.get("/usage/export.csv", {"group_by": "department"}))
    assert [row[0] for row in exported[1:]] == ["Sales"]


def test_bob_with_usage_read_only_explores_and_exports(client, acme_usage):
    client.force_login(acme_usage.bob.user)
    assert client.get("/usage/").status_code == 200
    assert client.get("/usage/export.csv").status_code == 200


def test_a_member_without_a_usage_policy_gets_403_naming_the_action(client, acme_usage):
    client.force_login(acme_usage.dora.user)
    for url in ("/usage/", "/usage/export.csv"):
        response = client.get(url)
        assert response.status_code == 403 and b"usage:QueryUsage" in response.content


def test_a_member_allowed_on_one_department_sees_only_that_department(client, acme_usage):
    world = acme_usage
    policy = ram.create_policy(actor=SYSTEM, organization=world.acme, name="ResearchUsage", document={
        "Version": "1", "Statement": [{
            "Effect": "Allow", "Action": "usage:QueryUsage",
            "Resource": f"acs:usage:*:{world.acme.pk}:department/*",
            "Condition": {"StringEquals": {"usage:DepartmentId": str(world.research.pk)}}}]})
    ram.attach_policy(actor=SYSTEM, policy=policy, member=world.dora)
    client.force_login(world.dora.user)
    html = client.get("/usage/", {"group_by": "department"}).content.decode()
    assert [row[0] for row in table_rows(html)] == ["Research"]
    assert "Support</option>" not in html and "All departments" not in html
    assert [row[0] for row in csv_rows(client.get("/usage/export.csv", {"group_by": "department"}))[1:]] == [
        "Research"]
    denied = client.get("/usage/", {"team": str(world.support.uuid)})
    assert denied.status_code == 403 and b"usage:QueryUsage" in denied.content


def test_an_empty_range_says_what_to_do(client, world):
    client.force_login(world.alice.user)
    html = client.get("/usage/").content.decode()
    assert 'data-testid="usage-empty"' in html and "API keys" in html


def test_under_asgi_the_csv_is_streamed_not_collected_first(client, acme_usage):
    """`make serve-prod` serves Django through ASGI: the export must stream there too (Django would
    otherwise collect a sync iterator whole before sending it), and say the same as under WSGI."""
    import warnings

    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client.force_login(acme_usage.alice.user)
    params = {"group_by": ["model", "day"], "start_date": (acme_usage.today - timedelta(days=9)).isoformat()}
    over_wsgi = b"".join(client.get("/usage/export.csv", params).streaming_content)

    async def over_asgi() -> tuple[bool, bytes]:
        asgi_client = AsyncClient()
        await asgi_client.aforce_login(acme_usage.alice.user)
        response = await asgi_client.get("/usage/export.csv", params)
        return response.is_async, b"".join([part async for part in response])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        streamed_async, body = async_to_sync(over_asgi)()
    assert streamed_async and body == over_wsgi and body.count(b"\n") > 1
    assert not [w for w in caught if "consume synchronous iterators" in str(w.message)]
