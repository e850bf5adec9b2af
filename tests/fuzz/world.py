"""The fuzzer's own world: one organization ("Fuzz Co") that nothing else in the run reads, with
every kind of object an operation can name, so that generated requests reach the handlers instead
of stopping at 401 or 404.

The fuzzer may change this organization's state (delete its keys, revoke management keys,
detach policies): it acts as an owner whose own access never depends on anything it can reach
through the API. Its management key is not listed under any member it can revoke by path (the
revoke route is pointed at a spare key of a spare member), and its AdministratorAccess is
attached to a group-less owner the fuzzer never names in a detach body."""

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone


@dataclass(frozen=True)
class FuzzWorld:
    owner_key: str  # management key of the owner (AdministratorAccess)
    service_token: str  # the gateway's token: ingestion, key verification, credit grants
    organization_uuid: str
    department_uuid: str
    key_uuid: str  # an inference key of the organization (GET/PUT/DELETE/rotate/... reach it)
    key_secret: str
    model_code: str
    spare_member_uuid: str
    spare_management_key_id: int
    policy_name: str  # a custom policy the fuzzer may edit, attach, detach or delete
    budget_uuid: str
    webhook_uuid: str
    invoice_uuid: str | None
    invoice_line_uuid: str | None
    upstream_uuid: str  # a gateway upstream (service token) that DELETE can reach
    spare_model_code: str  # a catalog model no upstream serves, so a valid POST of an upstream can succeed


def seed_fuzz_world() -> FuzzWorld:
    from billing import budgets as billing_budgets
    from billing import services as billing_services
    from billing import webhooks
    from billing.invoicing import run_billing
    from billing.models import Invoice, Model, Plan
    from billing.periods import Period
    from keys import services as key_services
    from portal import demo, services
    from portal.models import Policy
    from portal.ram import services as ram
    from portal.ram.system_policies import ADMINISTRATOR_ACCESS, sync_system_policies
    from usage.services import ingest_events

    sync_system_policies(Policy)
    demo.seed_catalog()
    actor = services.SYSTEM
    organization = services.create_organization(actor=actor, name="Fuzz Co", slug="fuzz-co", timezone="Asia/Kolkata")
    billing_services.open_billing_account(actor=actor, organization=organization, currency="CNY",
                                          credit_limit=Decimal("1000"), monthly_budget=Decimal("5000"))
    today = timezone.now().astimezone(organization.zone).date()
    billing_services.subscribe(actor=actor, organization=organization, plan=Plan.objects.order_by("pk").first(),
                               started_at=Period.containing(today - timedelta(days=40)).bounds(organization.zone)[0])
    billing_services.grant_credit(actor=actor, organization=organization, amount=Decimal("100"), kind="top_up",
                                  at=timezone.now() - timedelta(days=45))
    department = services.create_department(actor=actor, organization=organization, name="Fuzzing")
    owner = services.create_member(actor=actor, organization=organization, username="fuzz_owner",
                                   password="fuzz-pass", role="owner")
    ram.attach_policy(actor=actor, policy=ram.system_policy(ADMINISTRATOR_ACCESS), member=owner)
    owner_key = key_services.create_management_key(actor=actor, member=owner, name="fuzzer").secret
    spare = services.create_member(actor=actor, organization=organization, username="fuzz_spare",
                                   password="fuzz-pass", role="member")
    spare_key = key_services.create_management_key(actor=actor, member=spare, name="spare").key
    issued = key_services.create_inference_key(actor=actor, department=department, owner=owner, name="fuzz app")
    model = Model.objects.filter(modality="llm").order_by("code").first()
    now = timezone.now()
    ingest_events([{
        "request_id": f"fuzz-seed-{n}", "timestamp": (now - timedelta(hours=7 * n)).isoformat(),
        "key_id": str(issued.key.uuid), "model": model.code, "prompt_tokens": 100 + n, "completion_tokens": 40,
        "cached_tokens": 10, "latency_ms": 300 + n, "status_code": 500 if n % 9 == 0 else 200,
        "op_name": "chat", "trace_id": f"t{n % 5}", "conversation_id": f"c{n % 7}",
    } for n in range(1, 200)])
    policy = ram.create_policy(actor=actor, organization=organization, name="FuzzPolicy", document={
        "Version": "1", "Statement": [{"Effect": "Allow", "Action": "usage:*", "Resource": "*"}]})
    budget = billing_budgets.create_budget(actor=actor, organization=organization, scope="organization",
                                           amount=Decimal("1000"))
    webhook, _ = webhooks.create_webhook(actor=actor, organization=organization, url="http://127.0.0.1:9/hook",
                                         events=["budget.threshold"])
    service_token = key_services.create_service_token(actor=actor, name="fuzz-gateway").secret
    upstream_model, spare_model = Model.objects.filter(modality="llm").exclude(pk=model.pk).order_by("code")[:2]
    upstream = key_services.create_upstream(actor=actor, name="fuzz upstream", base_url="http://127.0.0.1:9/v1",
                                            api_key="sk-fuzz", model_codes=[upstream_model.code])
    run_billing(date=today)
    invoice = Invoice.objects.filter(organization=organization).order_by("pk").first()
    line = invoice.lines.filter(kind="usage").first() if invoice else None
    return FuzzWorld(
        owner_key=owner_key, service_token=service_token, organization_uuid=str(organization.uuid),
        department_uuid=str(department.uuid), key_uuid=str(issued.key.uuid), key_secret=issued.secret,
        model_code=model.code, spare_member_uuid=str(spare.uuid), spare_management_key_id=spare_key.pk,
        policy_name=policy.name, budget_uuid=str(budget.uuid), webhook_uuid=str(webhook.uuid),
        invoice_uuid=str(invoice.uuid) if invoice else None,
        invoice_line_uuid=str(line.uuid) if line else None,
        upstream_uuid=str(upstream.uuid), spare_model_code=spare_model.code,
    )
