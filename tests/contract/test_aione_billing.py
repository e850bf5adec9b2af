"""AIone catalog and billing endpoints: models with their current prices, the plan, the account."""

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from billing.services import grant_credit
from portal.services import SYSTEM
from tests import factories
from tests.api_helpers import client_for


def test_models_show_the_price_in_force_in_the_account_currency(history, schema_validator):
    model = history.models[0]
    factories.add_price(model, "CNY", datetime(2099, 1, 1, tzinfo=UTC), ("9", "9", "9", "0", "0"))  # not yet
    body = client_for(history.world.alice).get("/api/v1/models").json()
    schema_validator("/api/v1/models", "get", body)
    info = {m["id"]: m for m in body["data"]}[model.code]
    assert info["input_price_rmb_per_mtok"] == "0.8" and info["cached_input_price_rmb_per_mtok"] == "0.16"
    assert info["output_price_rmb_per_mtok"] == "2" and info["modality"] == "llm" and info["enabled"] is True


def test_plan_and_account(history, schema_validator):
    alice = client_for(history.world.alice)
    plan = alice.get("/api/v1/billing/plan").json()
    schema_validator("/api/v1/billing/plan", "get", plan)
    assert plan["code"] == "team" and plan["rpm_limit"] == 10 and plan["status"] == "active"
    grant_credit(actor=SYSTEM, organization=history.world.acme, amount=Decimal("1000"))
    account = alice.get("/api/v1/billing/account").json()
    schema_validator("/api/v1/billing/account", "get", account)
    used = sum(e.cost for e in history.events if e.organization_id == history.world.acme.pk)
    assert Decimal(account["balance_rmb"]) == (Decimal("1000") - used).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert account["monthly_budget_rmb"] == "50.00" and account["currency"] == "CNY"


def test_no_plan_is_404(world):
    assert client_for(world.charlie).get("/api/v1/billing/plan").status_code == 404
