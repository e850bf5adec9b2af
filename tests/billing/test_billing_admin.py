"""The org admin keeps budgets in the Django admin and reads grants and the ledger; operators
grant credit there. Each write goes through the same services as the API (audited, ledger
entry written), and nothing of Globex shows in Acme's admin."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from billing.budgets import create_budget
from billing.models import BillingAccount, Budget, CreditGrant, LedgerEntry
from billing.services import grant_credit
from portal.models import AuditLog
from portal.services import SYSTEM


@pytest.fixture
def globex_budget(world):
    grant_credit(actor=SYSTEM, organization=world.globex, amount=Decimal("7"), note="globex-grant")
    return create_budget(actor=SYSTEM, organization=world.globex, scope="organization", amount=Decimal("99"))


@pytest.mark.parametrize("model", ["budget", "creditgrant", "ledgerentry"])
def test_acmes_admin_lists_show_nothing_of_globex(client, world, globex_budget, model):
    client.force_login(world.alice.user)
    response = client.get(reverse(f"admin:billing_{model}_changelist"))
    assert response.status_code == 200
    body = response.content.decode()
    assert "Globex" not in body and "globex-grant" not in body and "99.00" not in body
    opened = client.get(reverse("admin:billing_budget_change", args=[globex_budget.pk]))
    assert opened.status_code in (302, 404)


def test_an_org_admin_creates_a_budget_through_the_service(client, world):
    client.force_login(world.alice.user)
    response = client.post(reverse("admin:billing_budget_add"), {
        "scope": "department", "department": world.research.pk, "amount": "150", "thresholds": "[50, 90]",
        "hard_limit": "on", "alerts-TOTAL_FORMS": "0", "alerts-INITIAL_FORMS": "0"})
    assert response.status_code == 302, response.content.decode()[:2000]
    budget = Budget.objects.get()
    assert (budget.organization, budget.department, budget.amount, budget.thresholds, budget.hard_limit) == (
        world.acme, world.research, Decimal(150), [50, 90], True)
    assert AuditLog.objects.filter(action="budget.create", organization=world.acme).exists()


def test_an_org_admin_cannot_grant_credit(client, world):
    client.force_login(world.alice.user)
    assert client.get(reverse("admin:billing_creditgrant_add")).status_code == 403


def test_an_operator_grants_credit_with_its_ledger_entry(client, world):
    operator = get_user_model().objects.create_superuser("operator", "op@platform.test", "pw")
    client.force_login(operator)
    response = client.post(reverse("admin:billing_creditgrant_add"), {
        "organization": world.acme.pk, "kind": "grant", "amount": "25", "priority": "3", "note": "Goodwill"})
    assert response.status_code == 302, response.content.decode()[:2000]
    grant = CreditGrant.objects.get()
    assert (grant.remaining, grant.priority, grant.currency) == (Decimal(25), 3, "CNY")
    assert LedgerEntry.objects.get(grant=grant).amount == Decimal(25)
    assert BillingAccount.objects.get(organization=world.acme).balance == Decimal(25)
    assert AuditLog.objects.filter(action="credit.grant", actor_label="operator").exists()


def test_an_operator_prices_cache_writes_in_the_admin(client, db):
    from billing.models import Model, Price

    root = get_user_model().objects.create_superuser("root", "root@platform.example", "pass-for-tests")
    client.force_login(root)
    model = Model.objects.create(code="claude-like", name="Claude-like", provider="Anthropic")
    for cache_write in ("3.75", ""):  # blank: cache writes charged as input
        response = client.post(reverse("admin:billing_price_add"), {
            "model": model.pk, "currency": "USD",
            "effective_from_0": "2026-01-01" if cache_write else "2026-02-01", "effective_from_1": "00:00:00",
            "input_per_mtok": "3", "cached_input_per_mtok": "0.3", "cache_write_per_mtok": cache_write,
            "output_per_mtok": "15", "per_image": "0", "per_video_second": "0"})
        assert response.status_code == 302, response.content.decode()[:3000]
    assert sorted(Price.objects.values_list("cache_write_per_mtok", flat=True), key=str) == [Decimal("3.75"), None]
    listed = client.get(reverse("admin:billing_price_changelist")).content.decode()
    assert "column-cache_write_per_mtok" in listed and "$3.75" in listed
