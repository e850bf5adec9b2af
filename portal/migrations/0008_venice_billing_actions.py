from django.db import migrations


def sync_system_policies(apps, schema_editor):
    # The system policies are derived from the action registry; billing:ListBillingUsageHistory and
    # billing:GetBalance (Venice's usage-history and balance) joined it.
    from portal.ram.system_policies import sync_system_policies

    sync_system_policies(apps.get_model("portal", "Policy"))


class Migration(migrations.Migration):
    dependencies = [("portal", "0007_audit_target_name")]
    operations = [migrations.RunPython(sync_system_policies, migrations.RunPython.noop)]
