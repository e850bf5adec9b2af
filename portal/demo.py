"""The demo world: catalog, plans, two organizations, and realistic usage.

Idempotent: the catalog, organizations, departments and members are looked up before they
are created, and usage events carry deterministic request ids, so a second run stores no
duplicate. Secrets cannot be read back, so each run issues fresh secrets for the demo keys
(replacing the previous ones) and prints them.
"""

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from billing import budgets as billing_budgets
from billing import services as billing_services
from billing.invoicing import run_billing
from billing.models import Budget, CreditGrant, Model, Plan
from billing.money import Currency
from billing.periods import Period
from keys import services as key_services
from keys.hashing import SecretKind, display_prefix, generate_secret, hash_secret
from keys.models import InferenceKey, ManagementKey, ServiceToken
from portal import services
from portal.models import Department, Member, Organization
from portal.ram import services as ram
from portal.ram.system_policies import ADMINISTRATOR_ACCESS, READ_ONLY_ACCESS
from usage import folding
from usage.services import MAX_BATCH

D = Decimal
DEMO_PASSWORD = "portal-demo-pass"
# Reads in both demo organizations (the organization switcher).
CONSULTANT = "consultant"
PRICE_HISTORY_START = datetime(2024, 1, 1, tzinfo=UTC)
PRICE_CHANGE = datetime(2026, 1, 1, tzinfo=UTC)

# code, name, provider, modality, context window,
# CNY (input, cached input, output per Mtok, per image, per video second[, cache write per Mtok]),
# USD (same). Without a cache-write price, cache writes are charged as input.
CATALOG: list[tuple[str, str, str, str, int | None, tuple[D, ...], tuple[D, ...]]] = [
    ("qwen-plus", "通义千问-Plus", "Alibaba Cloud", "llm", 131072,
     (D("0.8"), D("0.16"), D("2"), D(0), D(0)), (D("0.4"), D("0.08"), D("1.2"), D(0), D(0))),
    ("qwen-max", "通义千问-Max", "Alibaba Cloud", "llm", 32768,
     (D("2.4"), D("0.48"), D("9.6"), D(0), D(0)), (D("1.6"), D("0.32"), D("6.4"), D(0), D(0))),
    ("qwen-vl-plus", "通义千问-VL-Plus", "Alibaba Cloud", "vl", 131072,
     (D("1.5"), D("0.3"), D("4.5"), D(0), D(0)), (D("0.21"), D("0.042"), D("0.63"), D(0), D(0))),
    ("wanx2.1-t2i-turbo", "通义万相 2.1 Turbo", "Alibaba Cloud", "image", None,
     (D(0), D(0), D(0), D("0.14"), D(0)), (D(0), D(0), D(0), D("0.02"), D(0))),
    ("deepseek-chat", "DeepSeek-V3", "DeepSeek", "llm", 65536,
     (D("2"), D("0.5"), D("8"), D(0), D(0)), (D("0.27"), D("0.07"), D("1.1"), D(0), D(0))),
    ("deepseek-reasoner", "DeepSeek-R1", "DeepSeek", "llm", 65536,
     (D("4"), D("1"), D("16"), D(0), D(0)), (D("0.55"), D("0.14"), D("2.19"), D(0), D(0))),
    ("gpt-4o-mini", "GPT-4o mini", "OpenAI", "llm", 128000,
     (D("1.08"), D("0.54"), D("4.32"), D(0), D(0)), (D("0.15"), D("0.075"), D("0.6"), D(0), D(0))),
    ("gpt-4o", "GPT-4o", "OpenAI", "vl", 128000,
     (D("18"), D("9"), D("72"), D(0), D(0)), (D("2.5"), D("1.25"), D("10"), D(0), D(0))),
    ("kling-v1-6", "Kling 1.6", "Kuaishou", "video", None,
     (D(0), D(0), D(0), D(0), D("0.5")), (D(0), D(0), D(0), D(0), D("0.07"))),
    # Anthropic-style prompt caching: writing the cache costs more than plain input, reading it far less.
    ("claude-sonnet-4", "Claude Sonnet 4", "Anthropic", "llm", 200000,
     (D("21.6"), D("2.16"), D("108"), D(0), D(0), D("27")), (D("3"), D("0.3"), D("15"), D(0), D(0), D("3.75"))),
]
# The models whose traffic reports cache writes (those with a cache-write price).
CACHE_WRITING_MODELS = frozenset(code for code, *_rest, cny, _usd in CATALOG if len(cny) > 5)
# Before PRICE_CHANGE qwen-plus cost more: a real price history for the demo to show.
OLD_QWEN_PLUS = {Currency.CNY: (D("1.2"), D("0.24"), D("3"), D(0), D(0)),
                 Currency.USD: (D("0.6"), D("0.12"), D("1.8"), D(0), D(0))}

PLANS = [
    # code, name, currency, fee, included tokens, rpm, tpm, max keys, max teams
    ("starter", "Starter", Currency.CNY, D("0"), 1_000_000, 60, 100_000, 5, 2),
    ("team", "Team", Currency.CNY, D("999"), 50_000_000, 600, 1_000_000, 50, 10),
    ("team-usd", "Team (USD)", Currency.USD, D("149"), 50_000_000, 600, 1_000_000, 50, 10),
    ("enterprise", "Enterprise", Currency.CNY, D("19999"), 2_000_000_000, 6000, 10_000_000, 500, 100),
]


@dataclass(frozen=True)
class OrgSpec:
    name: str
    slug: str
    timezone: str
    currency: str
    plan: str
    monthly_budget: Decimal
    departments: tuple[str, str, str]
    # Requests on an average weekday; shapes how much usage the demo shows.
    daily_requests: int
    top_up: Decimal


ORGS = [
    OrgSpec("Acme", "acme", "Asia/Shanghai", Currency.CNY, "team", D("3000"),
            ("Research", "Customer Support", "Marketing"), 420, D("5000")),
    OrgSpec("Globex", "globex", "America/New_York", Currency.USD, "team-usd", D("500"),
            ("Engineering", "Sales", "Operations"), 300, D("800")),
]
ROLES = (Member.Role.OWNER, Member.Role.ADMIN, Member.Role.MEMBER)
KEYS_PER_DEPARTMENT = 2


def seed_catalog() -> None:
    for code, name, provider, modality, context, cny, usd in CATALOG:
        model, _ = Model.objects.update_or_create(
            code=code,
            defaults={"name": name, "provider": provider, "modality": modality, "context_window": context},
        )
        for currency, prices in ((Currency.CNY, cny), (Currency.USD, usd)):
            if code == "qwen-plus":
                _add_price(model, currency, PRICE_HISTORY_START, OLD_QWEN_PLUS[currency])
                _add_price(model, currency, PRICE_CHANGE, prices)
            else:
                _add_price(model, currency, PRICE_HISTORY_START, prices)
    for code, name, currency, fee, tokens, rpm, tpm, max_keys, max_teams in PLANS:
        Plan.objects.update_or_create(
            code=code,
            defaults={"name": name, "currency": currency, "monthly_fee": fee, "included_tokens": tokens,
                      "rpm_limit": rpm, "tpm_limit": tpm, "max_keys": max_keys, "max_teams": max_teams},
        )


def _add_price(model: Model, currency: str, start: datetime, prices: tuple[Decimal, ...]) -> None:
    billing_services.add_price(
        model=model, currency=currency, effective_from=start, input_per_mtok=prices[0],
        cached_input_per_mtok=prices[1], output_per_mtok=prices[2], per_image=prices[3],
        per_video_second=prices[4], cache_write_per_mtok=prices[5] if len(prices) > 5 else None,
    )


PLATFORM_ADMIN = "platform_admin"


def _ensure_platform_admin() -> None:
    """A superuser for the platform operator: sees every organization in the admin."""
    user, _ = get_user_model().objects.get_or_create(
        username=PLATFORM_ADMIN, defaults={"is_staff": True, "is_superuser": True, "email": "ops@platform.example"}
    )
    user.set_password(DEMO_PASSWORD)
    user.save()


def _reissue_secret(key: InferenceKey | ManagementKey | ServiceToken, kind: SecretKind) -> str:
    """Give an existing demo credential a new secret (the old one cannot be printed again)."""
    secret = generate_secret(kind)
    old_hash, old_prefix = key.secret_hash, key.key_prefix
    key.secret_hash = hash_secret(secret)
    key.key_prefix = display_prefix(secret)
    key.save(update_fields=["secret_hash", "key_prefix"])
    organization = getattr(key, "organization", None) or getattr(getattr(key, "member", None), "organization", None)
    services.record_audit(actor=services.Actor(label="seed_demo"), organization=organization,
                          action=f"{type(key).__name__.lower()}.reissue", target=key,
                          detail={"old_key_prefix": old_prefix, "key_prefix": key.key_prefix})
    key_services.forget_verification(old_hash)  # the old secret stops verifying at once
    return secret


@transaction.atomic
def seed_world(usage_days: int = 0) -> dict[str, Any]:
    """Catalog, plans, organizations and their people and keys. Returns the --json document
    (without usage). A new organization's subscription starts on the first day of the month its
    `usage_days` of usage begin in (today's month with none), so the demo's invoices are those of
    the months its usage covers."""
    seed_catalog()
    actor = services.SYSTEM
    token = ServiceToken.objects.filter(name="demo-gateway").first()
    if token is None:
        service_secret = key_services.create_service_token(actor=actor, name="demo-gateway").secret
    else:
        service_secret = _reissue_secret(token, SecretKind.SERVICE)

    _ensure_platform_admin()
    document: dict[str, Any] = {"service_token": service_secret, "orgs": []}
    for spec in ORGS:
        organization = Organization.objects.filter(slug=spec.slug).first() or services.create_organization(
            actor=actor, name=spec.name, slug=spec.slug, timezone=spec.timezone
        )
        billing_services.open_billing_account(
            actor=actor, organization=organization, currency=spec.currency,
            credit_limit=D("10000"), monthly_budget=spec.monthly_budget,
            billing_email=f"billing@{spec.slug}.example", tax_id=f"{spec.slug.upper()}-TAX-001",
        )
        if not organization.credit_grants.exists():
            billing_services.grant_credit(actor=actor, organization=organization, amount=spec.top_up,
                                          kind="top_up", note="Demo opening top-up",
                                          at=timezone.now() - timedelta(days=60))
        if not organization.subscriptions.filter(status="active").exists():
            first_day = timezone.now().astimezone(organization.zone).date() - timedelta(days=max(usage_days - 1, 0))
            billing_services.subscribe(
                actor=actor, organization=organization, plan=Plan.objects.get(code=spec.plan),
                started_at=Period.containing(first_day).bounds(organization.zone)[0],
            )
        members = []
        for role in ROLES:
            username = f"{spec.slug}_{role}"
            member = Member.objects.filter(user__username=username).first()
            if member is None:
                member = services.create_member(
                    actor=actor, organization=organization, username=username, password=DEMO_PASSWORD,
                    role=role, email=f"{role}@{spec.slug}.example",
                )
            else:
                member.user.set_password(DEMO_PASSWORD)
                member.user.save(update_fields=["password"])
            # Owners and admins administer; the member reads (RAM, API.md §8).
            policy = READ_ONLY_ACCESS if role == Member.Role.MEMBER else ADMINISTRATOR_ACCESS
            ram.attach_policy(actor=actor, policy=ram.system_policy(policy), member=member)
            management_key = ManagementKey.objects.filter(member=member, name="demo").first()
            if management_key is None:
                secret = key_services.create_management_key(actor=actor, member=member, name="demo").secret
            else:
                secret = _reissue_secret(management_key, SecretKind.MANAGEMENT)
            members.append({"uuid": str(member.uuid), "username": username, "password": DEMO_PASSWORD,
                            "role": role, "management_key": secret, "_member": member})
        departments = []
        for position, name in enumerate(spec.departments):
            discount = D("0.9") if position == 2 else D("1.0")
            department = Department.objects.filter(organization=organization, name=name).first()
            if department is None:
                department = services.create_department(
                    actor=actor, organization=organization, name=name, discount=discount,
                    contact_name=f"{name} lead", contact_email=f"{name.split()[0].lower()}@{spec.slug}.example",
                )
            departments.append(department)
        keys = []
        owners = [m["_member"] for m in members]
        for position, department in enumerate(departments):
            for number in range(1, KEYS_PER_DEPARTMENT + 1):
                name = f"{department.name} app {number}"
                key = InferenceKey.objects.filter(department=department, name=name).first()
                if key is None:
                    issued = key_services.create_inference_key(
                        actor=actor, department=department, name=name, owner=owners[(position + number) % 3],
                    )
                    key, secret = issued.key, issued.secret
                else:
                    secret = _reissue_secret(key, SecretKind.INFERENCE)
                keys.append({"id": key.pk, "uuid": str(key.uuid), "department_uuid": str(department.uuid),
                             "key": secret})
        for member in members:
            del member["_member"]
        document["orgs"].append({
            "id": organization.pk, "uuid": str(organization.uuid), "name": organization.name,
            "timezone": organization.timezone, "currency": spec.currency, "members": members,
            # A discount is a ratio, not money: a plain JSON number (1.0, 0.9) is what callers expect.
            "departments": [{"id": d.pk, "uuid": str(d.uuid), "name": d.name, "discount": float(d.discount)}
                            for d in departments],
            "inference_keys": keys,
        })
    _ensure_consultant()
    return document


def _ensure_consultant() -> None:
    """A reader in both organizations, so the demo shows the portal's organization switcher."""
    user = get_user_model().objects.filter(username=CONSULTANT).first()
    if user is None:
        user = get_user_model().objects.create_user(CONSULTANT, email="consultant@example.com")
    user.set_password(DEMO_PASSWORD)
    user.save(update_fields=["password"])
    for organization in Organization.objects.filter(slug__in=[spec.slug for spec in ORGS]):
        if not Member.objects.filter(user=user, organization=organization).exists():
            member = services.add_membership(actor=services.SYSTEM, organization=organization, user=user)
            ram.attach_policy(actor=services.SYSTEM, policy=ram.system_policy(READ_ONLY_ACCESS), member=member)


# --- usage -------------------------------------------------------------------------------

# Share of a day's traffic by local hour: quiet nights, a morning ramp, an afternoon peak.
HOURLY_WEIGHTS = [0.2, 0.15, 0.1, 0.1, 0.1, 0.2, 0.4, 0.8, 1.4, 1.9, 2.1, 2.0,
                  1.5, 1.8, 2.1, 2.2, 2.0, 1.7, 1.3, 1.0, 0.9, 0.8, 0.6, 0.35]


def _zipf_weights(count: int, exponent: float = 1.1) -> list[float]:
    return [1 / (rank ** exponent) for rank in range(1, count + 1)]


def _day_events(spec: OrgSpec, organization: Organization, day: date, keys: list[InferenceKey],
                models: list[Model], now: datetime) -> Iterator[dict[str, Any]]:
    """A day of one organization's traffic, the same every time it is generated."""
    rng = random.Random(f"{spec.slug}:{day.isoformat()}")
    weekend = day.weekday() >= 5
    count = int(spec.daily_requests * (0.35 if weekend else 1.0) * rng.uniform(0.85, 1.15))
    key_weights = _zipf_weights(len(keys))
    model_weights = _zipf_weights(len(models), 1.2)
    zone = organization.zone
    conversations: list[str] = []
    for sequence in range(count):
        hour = rng.choices(range(24), weights=HOURLY_WEIGHTS)[0]
        local = datetime(day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=zone)
        when = local.astimezone(UTC)
        if when >= now:
            continue
        model = rng.choices(models, weights=model_weights)[0]
        key = rng.choices(keys, weights=key_weights)[0]
        failed = rng.random() < 0.025
        status = rng.choice([429, 500, 502, 400]) if failed else 200
        prompt = completion = cached = cache_written = images = video = 0
        if model.modality in ("llm", "vl"):
            prompt = int(rng.lognormvariate(6.5, 0.9))
            cached = int(prompt * rng.choice([0, 0, 0, 0.3, 0.6]))
            completion = 0 if failed else int(rng.lognormvariate(5.5, 0.8))
            if model.code in CACHE_WRITING_MODELS:  # a conversation's first turn writes the cache the next ones read
                cache_written = int((prompt - cached) * rng.choice([0, 0, 0.5, 0.9]))
        elif model.modality == "image":
            images = 0 if failed else rng.choice([1, 1, 2, 4])
        elif model.modality == "video":
            video = 0 if failed else rng.choice([5, 5, 10])
        latency = int(rng.lognormvariate(6.3, 0.5) + completion * rng.uniform(8, 20) + video * 3000 + images * 2500)
        if rng.random() < 0.6 and conversations:
            conversation = rng.choice(conversations[-20:])
        else:
            conversation = f"conv-{spec.slug}-{day.isoformat()}-{sequence}"
            conversations.append(conversation)
        yield {
            "request_id": f"demo-{spec.slug}-{day.isoformat()}-{sequence:05d}",
            "timestamp": when.isoformat(),
            "key_id": str(key.uuid),
            "model": model.code,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cached_tokens": cached,
            "cache_creation_tokens": cache_written,
            "image_count": images,
            "video_seconds": video,
            "input_chars": int(prompt * 1.6),
            "output_chars": int(completion * 1.6),
            "latency_ms": latency,
            "status_code": status,
            "error_type": {429: "rate_limited", 500: "upstream_error", 502: "bad_gateway",
                           400: "invalid_request"}.get(status),
            "op_name": rng.choice(["chat.completions", "chat.completions", "embeddings", "agent.step"]),
            "trace_id": f"trace-{spec.slug}-{day.isoformat()}-{sequence // 3}",
            "conversation_id": conversation,
        }


def plan_usage(days: int) -> list[tuple[OrgSpec, Organization, date]]:
    """The (organization, local day) units of work for the last `days` days, today included."""
    units = []
    for spec in ORGS:
        organization = Organization.objects.get(slug=spec.slug)
        today = timezone.now().astimezone(organization.zone).date()
        units.extend((spec, organization, today - timedelta(days=offset)) for offset in range(days - 1, -1, -1))
    return units


def generate_usage(days: int, on_unit_done: Callable[[int, int], None] | None = None) -> tuple[int, int]:
    """Send `days` days of demo traffic through the ingestion service. Returns (accepted, duplicates)."""
    models = list(Model.objects.filter(enabled=True).order_by("id"))
    accepted = duplicates = 0
    now = timezone.now()
    for spec, organization, day in plan_usage(days):
        keys = list(InferenceKey.objects.filter(organization=organization, deleted_at__isnull=True).order_by("id"))
        batch = list(_day_events(spec, organization, day, keys, models, now))
        for start in range(0, len(batch), MAX_BATCH):
            if batch[start : start + MAX_BATCH]:
                # The gateway's path: events, rollups, charges and hard limits in one transaction.
                result = billing_services.record_usage(batch[start : start + MAX_BATCH])
                accepted += result.accepted
                duplicates += result.duplicates
        if on_unit_done:
            on_unit_done(accepted, duplicates)
    # With a broker, a worker folds after each commit; the budgets seeded next read the rollups.
    folding.fold_until_empty()
    return accepted, duplicates


# --- billing ------------------------------------------------------------------------------

WELCOME_CREDIT = {Currency.CNY: D("200"), Currency.USD: D("30")}
# The department budget is set to this share above what the department has spent this month,
# so a newcomer sees one budget just short of its 80 % threshold.
NEAR_THRESHOLD_PROGRESS = D("0.76")


DEMO_PROVIDER_URL = "http://127.0.0.1:8001/v1"


def seed_upstream(base_url: str = DEMO_PROVIDER_URL) -> None:
    """The gateway's upstream for the demo: every chat model of the catalog goes to the stand-in
    provider `make demo` starts on loopback (bench/standin_provider.py: deterministic answers
    and usage), so a key made in the portal can call /v1/chat/completions at once. Idempotent."""
    from keys.models import Upstream  # noqa: PLC0415 - only the demo configures one

    if Upstream.objects.filter(name="demo stand-in").exists():
        return
    chat = list(Model.objects.filter(modality__in=[Model.Modality.LLM, Model.Modality.VL])
                .exclude(code__in=[code for upstream in Upstream.objects.all() for code in upstream.model_codes])
                .order_by("code").values_list("code", flat=True))
    key_services.create_upstream(actor=services.SYSTEM, name="demo stand-in", base_url=base_url,
                                 api_key=generate_secret(SecretKind.INFERENCE), model_codes=chat)


def seed_grants() -> None:
    """A welcome grant that expires in five days (drawn before the top-up: priority 5)."""
    actor = services.SYSTEM
    for spec in ORGS:
        organization = Organization.objects.get(slug=spec.slug)
        if not CreditGrant.objects.filter(organization=organization, note="Welcome credit").exists():
            billing_services.grant_credit(actor=actor, organization=organization, amount=WELCOME_CREDIT[spec.currency],
                                          note="Welcome credit", priority=5,
                                          expires_at=timezone.now() + timedelta(days=5))


def seed_budgets() -> None:
    """Per organization: a monthly budget for the whole organization (alerts only) and a hard
    budget on its first department, sized so that it stands just under its 80 % threshold."""
    actor = services.SYSTEM
    for spec in ORGS:
        organization = Organization.objects.get(slug=spec.slug)
        if not Budget.objects.filter(organization=organization, scope=Budget.Scope.ORGANIZATION).exists():
            billing_budgets.create_budget(actor=actor, organization=organization, scope=Budget.Scope.ORGANIZATION,
                                          amount=spec.monthly_budget)
        department = Department.objects.get(organization=organization, name=spec.departments[0])
        budget = Budget.objects.filter(organization=organization, department=department).first()
        if budget is None:
            budget = billing_budgets.create_budget(actor=actor, organization=organization,
                                                   scope=Budget.Scope.DEPARTMENT, department=department,
                                                   amount=spec.monthly_budget, hard_limit=True)
        spent = billing_budgets.budget_state(budget).spent
        if spent > 0:
            amount = (spent / NEAR_THRESHOLD_PROGRESS).quantize(D("0.01"))
            billing_budgets.update_budget(actor=actor, budget=budget, amount=amount)


def seed_invoices() -> int:
    """The nightly invoice job as of today: the months the demo's usage covers that have ended."""
    return run_billing(date=timezone.now().date()).invoices_created
