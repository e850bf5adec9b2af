"""Existing credit grants become ledger entries, their remainders are drawn down by the usage
already recorded (oldest grant first), and every account's running balance is set to the sum of
its entries minus its usage."""

from decimal import Decimal

from django.db import migrations
from django.db.models import Sum


def forwards(apps, schema_editor):
    BillingAccount = apps.get_model("billing", "BillingAccount")
    CreditGrant = apps.get_model("billing", "CreditGrant")
    LedgerEntry = apps.get_model("billing", "LedgerEntry")
    UsageEvent = apps.get_model("usage", "UsageEvent")
    for account in BillingAccount.objects.all():
        used = UsageEvent.objects.filter(organization_id=account.organization_id).aggregate(
            total=Sum("cost"))["total"] or Decimal(0)
        to_draw = used
        granted = Decimal(0)
        for grant in CreditGrant.objects.filter(organization_id=account.organization_id).order_by("created_at", "id"):
            LedgerEntry.objects.create(organization_id=grant.organization_id, kind=grant.kind, amount=grant.amount,
                                       currency=grant.currency, grant=grant, note=grant.note,
                                       created_at=grant.created_at)
            granted += grant.amount
            drawn = min(grant.amount, to_draw)
            to_draw -= drawn
            grant.remaining = grant.amount - drawn
            grant.status = "used" if grant.remaining == 0 else "active"
            grant.save(update_fields=["remaining", "status"])
        account.balance = granted - used
        account.save(update_fields=["balance"])


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_billing_ledger"),
        ("usage", "0006_bins_dense"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
