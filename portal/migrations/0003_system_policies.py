from django.db import migrations


def create_system_policies(apps, schema_editor):
    from portal.ram.system_policies import sync_system_policies

    sync_system_policies(apps.get_model("portal", "Policy"))


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_policies")]
    operations = [migrations.RunPython(create_system_policies, migrations.RunPython.noop)]
