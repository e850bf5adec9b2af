"""The dashboard page (API.md §11, `/`): the AIone dashboard's numbers as cards and charts, each
recomputed here from the events the test sends, for the organization or one department."""

import json
import re
from datetime import timedelta
from decimal import Decimal

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
    """Research calls qwen today (one error); Support calls deepseek yesterday; Globex has its own."""
    world, now = ram_world, timezone.now()
    qwen = factories.make_model("qwen-test", cny=("2", "0.5", "8", "0", "0"))
    deepseek = factories.make_model("deepseek-test", cny=("1", "0.2", "2", "0", "0"))
    research_key, _ = factories.make_inference_key(world.research, name="research-app")
    support_key, _ = factories.make_inference_key(world.support, name="support-bot")
    sales_key, _ = factories.make_inference_key(world.sales, name="globex-sales")
    today, yesterday = now - timedelta(minutes=5), now - timedelta(days=1)
    record_usage([
        factories.event(research_key, qwen, timestamp=today.isoformat(), prompt_tokens=300_000,
                        completion_tokens=100_000, latency_ms=400),
        factories.event(research_key, qwen, timestamp=today.isoformat(), prompt_tokens=200_000,
                        completion_tokens=50_000, latency_ms=900, status_code=500, error_type="upstream"),
        factories.event(support_key, deepseek, timestamp=yesterday.isoformat(), prompt_tokens=2_000_000,
                        completion_tokens=500_000, latency_ms=1200),
        factories.event(sales_key, deepseek, timestamp=today.isoformat(), prompt_tokens=7_777_777,
                        completion_tokens=0),
    ])
    world.qwen, world.deepseek = qwen, deepseek
    return world


def chart(html: str, chart_id: str) -> dict:
    found = re.search(rf'<script id="{re.escape(chart_id)}" type="application/json">(.*?)</script>', html, re.S)
    assert found, f"no chart spec {chart_id}"
    return json.loads(found.group(1))


def acme_events(world, **lookup):
    return list(UsageEvent.objects.filter(organization=world.acme, **lookup))


def test_the_charts_carry_the_numbers_of_the_events(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    response = client.get("/", {"range_days": 7})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="dashboard"' in html and 'data-chart="daily-cost"' in html
    events = acme_events(world)
    research = [e for e in events if e.department_id == world.research.pk]
    support = [e for e in events if e.department_id == world.support.pk]

    requests = chart(html, "daily-requests")
    assert len(requests["labels"]) == 7
    assert requests["datasets"][0]["data"][-2:] == [len(support), len(research)]  # yesterday, today
    assert sum(requests["datasets"][0]["data"]) == len(events)
    tokens = chart(html, "daily-tokens")
    assert tokens["datasets"][0]["data"][-1] == sum(e.prompt_tokens + e.completion_tokens for e in research)
    cost = chart(html, "daily-cost")
    assert cost["money"] == "CNY"
    assert cost["datasets"][0]["data"][-1] == pytest.approx(float(sum(e.cost for e in research)))
    models = chart(html, "model-distribution")
    assert dict(zip(models["labels"], models["datasets"][0]["data"], strict=True)) == {"qwen-test": 2,
                                                                                     "deepseek-test": 1}
    teams = chart(html, "team-cost")
    support_cost, research_cost = sum(e.cost for e in support), sum(e.cost for e in research)
    assert support_cost > research_cost
    assert teams["labels"] == ["Support", "Research"] and teams["horizontal"]
    assert teams["datasets"][0]["data"] == [pytest.approx(float(support_cost)), pytest.approx(float(research_cost))]

    card = html.split('data-testid="card-cost"')[1].split("</div></div>")[0]
    total = (support_cost + research_cost).quantize(Decimal("0.01"))
    assert f"{total:,}" in card
    errors = html.split('data-testid="card-errors"')[1].split("</div></div>")[0]
    assert "33.33%" in errors  # 1 error in 3 requests
    assert 'data-testid="data-freshness"' in html


def test_range_days_defaults_to_30(client, acme_usage):
    client.force_login(acme_usage.alice.user)
    html = client.get("/").content.decode()
    assert len(chart(html, "daily-requests")["labels"]) == 30
    assert len(chart(client.get("/", {"range_days": 1}).content.decode(), "daily-requests")["labels"]) == 1


@pytest.mark.parametrize("value", ["0", "91", "x", "-3", "7.5"],
                         ids=["zero", "over-90", "word", "negative", "fraction"])
def test_a_bad_range_is_a_visible_error_not_another_range(client, acme_usage, value):
    client.force_login(acme_usage.alice.user)
    response = client.get("/", {"range_days": value})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="form-errors"' in html and "Days:" in html
    assert 'data-testid="card-cost"' not in html and "daily-cost" not in html.split("form-errors")[1]
    assert f'value="{value}"' in html  # what was typed stays in the field


def test_team_filter_narrows_every_number_to_that_department(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    research = acme_events(world, department=world.research)
    for team in (str(world.research.uuid), str(world.research.pk)):
        html = client.get("/", {"range_days": 7, "team": team}).content.decode()
        assert chart(html, "team-cost")["labels"] == ["Research"]
        assert sum(chart(html, "daily-requests")["datasets"][0]["data"]) == len(research)
        assert chart(html, "model-distribution")["labels"] == ["qwen-test"]
        assert "Support" not in html.split('data-testid="dashboard-filters"')[1].split("</form>", 1)[1]
        assert 'data-testid="card-monthly-budget"' not in html  # the organization's budget is not this team's


def test_a_foreign_or_unknown_team_is_a_form_error(client, acme_usage):
    world = acme_usage
    client.force_login(world.alice.user)
    for team in (str(world.sales.uuid), "not-a-uuid", "999999"):
        html = client.get("/", {"team": team}).content.decode()
        assert "No such department." in html and 'data-testid="card-cost"' not in html


def test_charlie_sees_none_of_acmes_numbers(client, acme_usage):
    world = acme_usage
    client.force_login(world.charlie.user)
    html = client.get("/", {"range_days": 7}).content.decode()
    assert chart(html, "team-cost")["labels"] == ["Sales"]
    assert sum(chart(html, "daily-requests")["datasets"][0]["data"]) == 1
    assert "Research" not in html and "Support" not in html and "qwen-test" not in html
    html = client.get("/", {"team": str(world.research.uuid)}).content.decode()
    assert "No such department." in html and "Research" not in html


def test_budget_progress_shows_the_monthly_budget_and_budgets(client, acme_usage):
    from billing.budgets import create_budget
    from billing.models import BillingAccount

    world = acme_usage
    BillingAccount.objects.filter(organization=world.acme).update(monthly_budget=Decimal("100"))
    budget = create_budget(actor=SYSTEM, organization=world.acme, scope="department", department=world.research,
                           amount=Decimal("10"))
    client.force_login(world.alice.user)
    html = client.get("/").content.decode()
    assert 'data-testid="card-monthly-budget"' in html and f'data-testid="budget-{budget.uuid}"' in html
    client.force_login(world.bob.user)  # usage only: the dashboard's budget figure, not the budgets
    html = client.get("/").content.decode()
    assert 'data-testid="card-monthly-budget"' in html and f'data-testid="budget-{budget.uuid}"' not in html


def test_bob_with_usage_read_only_sees_the_dashboard(client, acme_usage):
    client.force_login(acme_usage.bob.user)
    response = client.get("/")
    assert response.status_code == 200 and b'data-testid="card-cost"' in response.content


def test_a_member_without_a_usage_policy_gets_403_naming_the_action(client, acme_usage):
    client.force_login(acme_usage.dora.user)  # keys of Research only
    response = client.get("/")
    assert response.status_code == 403
    assert b"usage:GetDashboard" in response.content and b'data-testid="denied-action"' in response.content


def test_a_member_allowed_on_one_department_sees_only_that_department(client, acme_usage):
    world = acme_usage
    policy = ram.create_policy(actor=SYSTEM, organization=world.acme, name="ResearchUsage", document={
        "Version": "1", "Statement": [{
            "Effect": "Allow", "Action": ["usage:GetDashboard", "usage:QueryUsage"],
            "Resource": f"acs:usage:*:{world.acme.pk}:department/*",
            "Condition": {"StringEquals": {"usage:DepartmentId": str(world.research.pk)}}}]})
    ram.attach_policy(actor=SYSTEM, policy=policy, member=world.dora)
    client.force_login(world.dora.user)
    html = client.get("/", {"range_days": 7}).content.decode()
    assert chart(html, "team-cost")["labels"] == ["Research"]
    assert "Support" not in html and "All departments" not in html
    denied = client.get("/", {"team": str(world.support.uuid)})
    assert denied.status_code == 403 and b"usage:GetDashboard" in denied.content


def test_an_organization_without_usage_is_told_what_to_do(client, world):
    client.force_login(world.alice.user)
    html = client.get("/").content.decode()
    assert 'data-testid="dashboard-empty"' in html and "Send your first request" in html
    assert 'href="/keys/"' in html and "data-chart" not in html


def test_anonymous_is_sent_to_login(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")
