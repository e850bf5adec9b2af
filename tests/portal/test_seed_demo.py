import json
from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import Model, Plan, Price
from keys.hashing import hash_secret
from keys.models import InferenceKey, ManagementKey, ServiceToken
from portal.models import Department, Member, Organization
from usage.models import UsageEvent


def _seed(*args: str) -> dict:
    out = StringIO()
    call_command("seed_demo", "--json", *args, stdout=out)
    return json.loads(out.getvalue())  # the whole of stdout must be one JSON document


@pytest.mark.django_db
def test_seed_demo_json_describes_a_working_world():
    document = _seed("--days", "2")
    assert ServiceToken.objects.get(secret_hash=hash_secret(document["service_token"]))
    assert [org["name"] for org in document["orgs"]] == ["Acme", "Globex"]
    assert [org["timezone"] for org in document["orgs"]] == ["Asia/Shanghai", "America/New_York"]
    for org in document["orgs"]:
        organization = Organization.objects.get(uuid=org["uuid"], pk=org["id"])
        assert [m["role"] for m in org["members"]] == ["owner", "admin", "member"]
        for member in org["members"]:
            stored = Member.objects.get(uuid=member["uuid"])
            assert stored.organization == organization and stored.user.check_password(member["password"])
            key = ManagementKey.objects.get(secret_hash=hash_secret(member["management_key"]))
            assert key.member == stored
        assert [d["discount"] for d in org["departments"]] == [1.0, 1.0, 0.9]
        assert {Department.objects.get(uuid=d["uuid"]).organization for d in org["departments"]} == {organization}
        assert len(org["inference_keys"]) >= 3
        for key in org["inference_keys"]:
            stored = InferenceKey.objects.get(secret_hash=hash_secret(key["key"]))
            assert str(stored.department.uuid) == key["department_uuid"] and stored.organization == organization
    assert Model.objects.count() >= 8 and Model.objects.values("provider").distinct().count() >= 3
    assert set(Price.objects.values_list("currency", flat=True)) >= {"CNY", "USD"}
    assert UsageEvent.objects.filter(organization__name="Acme").exists()
    assert UsageEvent.objects.filter(organization__name="Globex").exists()


@pytest.mark.django_db
def test_seed_demo_twice_neither_fails_nor_duplicates():
    first = _seed("--days", "2")
    counts = (Model.objects.count(), Price.objects.count(), Plan.objects.count(), Organization.objects.count(),
              Member.objects.count(), Department.objects.count(), InferenceKey.objects.count())
    events = UsageEvent.objects.count()
    second = _seed("--days", "2")
    assert counts == (Model.objects.count(), Price.objects.count(), Plan.objects.count(),
                      Organization.objects.count(), Member.objects.count(), Department.objects.count(),
                      InferenceKey.objects.count())
    # Only events of the last minutes (generated deterministically) may have been added.
    assert UsageEvent.objects.count() - events < 50
    assert [o["uuid"] for o in first["orgs"]] == [o["uuid"] for o in second["orgs"]]
    # The second run printed fresh secrets, and those are the ones that work now.
    new_key = second["orgs"][0]["inference_keys"][0]["key"]
    assert InferenceKey.objects.filter(secret_hash=hash_secret(new_key)).exists()
    assert not InferenceKey.objects.filter(secret_hash=hash_secret(first["orgs"][0]["inference_keys"][0]["key"]))


@pytest.mark.django_db
def test_seed_demo_with_zero_days_creates_no_usage():
    _seed("--days", "0")
    assert Organization.objects.count() == 2
    assert UsageEvent.objects.count() == 0


@pytest.mark.django_db
def test_seed_demo_usage_has_rhythm_and_errors():
    _seed("--days", "7")
    events = UsageEvent.objects.filter(organization__name="Acme")
    assert events.filter(status_code__gte=400).exists()
    assert events.values("model").distinct().count() >= 4
    top_model_share = max(events.filter(model=m).count() for m in Model.objects.all()) / events.count()
    assert 0.2 < top_model_share < 0.8  # skewed, not uniform, not a single model


@pytest.mark.django_db
def test_the_demo_shows_budgets_a_grant_about_to_expire_and_a_charged_ledger():
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from billing.budgets import budget_state
    from billing.models import BillingAccount, Budget, CreditGrant, LedgerEntry

    _seed("--days", "2")
    for organization in Organization.objects.filter(slug__in=["acme", "globex"]):
        budgets = Budget.objects.filter(organization=organization)
        assert sorted(budgets.values_list("scope", flat=True)) == ["department", "organization"]
        near = budget_state(budgets.get(scope="department"))
        assert near.budget.hard_limit and Decimal(70) <= near.progress_pct < Decimal(80)
        welcome = CreditGrant.objects.get(organization=organization, note="Welcome credit")
        assert timezone.now() < welcome.expires_at <= timezone.now() + timedelta(days=5)
        assert welcome.remaining == welcome.amount and welcome.status == "active"  # there to expire
        # Summed in Python: SQLite would sum decimals as floats.
        entries = sum(LedgerEntry.objects.filter(organization=organization).values_list("amount", flat=True))
        used = sum(UsageEvent.objects.filter(organization=organization).values_list("cost", flat=True))
        assert used > 0 and BillingAccount.objects.get(organization=organization).balance == entries - used


@pytest.mark.django_db
def test_the_demo_invoices_the_ended_months_its_usage_covers_and_none_without_usage():
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import Invoice

    _seed("--days", "0")
    assert not Invoice.objects.exists()
    _seed("--days", "40")  # on any day of a month, 40 days reach into at least one ended month
    acme = Organization.objects.get(slug="acme")
    invoices = Invoice.objects.filter(organization=acme)
    assert invoices.exists() and all(invoice.status == "issued" for invoice in invoices)
    today = timezone.now().astimezone(acme.zone).date()
    assert all(invoice.period_end < today for invoice in invoices)
    assert all(invoice.period_start >= today - timedelta(days=70) for invoice in invoices)


@pytest.mark.django_db
def test_seed_demo_writes_prompt_caches_at_the_cache_write_price():
    _seed("--days", "7")
    price = Price.objects.filter(model__code="claude-sonnet-4", currency="USD").get()
    assert price.cache_write_per_mtok > price.input_per_mtok > price.cached_input_per_mtok
    written = UsageEvent.objects.filter(model__code="claude-sonnet-4", cache_creation_tokens__gt=0)
    assert written.exists()
    for event in written[:20]:
        assert event.cached_tokens + event.cache_creation_tokens <= event.prompt_tokens
        assert event.cache_write_cost > 0
    # Other models report no cache writes.
    assert not UsageEvent.objects.exclude(model__code="claude-sonnet-4").filter(cache_creation_tokens__gt=0).exists()


@pytest.mark.django_db
def test_the_demo_routes_every_chat_model_to_the_stand_in_once():
    """`make demo` serves the stand-in provider on 127.0.0.1:8001; the demo's one upstream sends
    every chat model there, and a second seed changes nothing."""
    from keys.models import Upstream

    _seed("--days", "0")
    _seed("--days", "0")
    upstream = Upstream.objects.get()
    chat = set(Model.objects.filter(modality__in=[Model.Modality.LLM, Model.Modality.VL])
               .values_list("code", flat=True))
    assert upstream.name == "demo stand-in" and upstream.base_url == "http://127.0.0.1:8001/v1"
    assert set(upstream.model_codes) == chat and "wanx2.1-t2i-turbo" not in upstream.model_codes
