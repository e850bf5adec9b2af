from django.db import migrations


def sync_system_policies(apps, schema_editor):
    # The system policies are derived from the action registry; ram:ListAuditLog joined it.
    from portal.ram.system_policies import sync_system_policies

    sync_system_policies(apps.get_model("portal", "Policy"))


class Migration(migrations.Migration):
    dependencies = [("portal", "0005_member_of_several_organizations")]
    operations = [migrations.RunPython(sync_system_policies, migrations.RunPython.noop)]
