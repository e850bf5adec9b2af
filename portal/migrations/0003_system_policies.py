from django.db import migrations


def create_system_policies(apps, schema_editor):
    from portal.ram.system_policies import system_policy_documents

    Policy = apps.get_model("portal", "Policy")
    for name, (description, document) in system_policy_documents().items():
        Policy.objects.update_or_create(
            organization=None, name=name,
            defaults={"policy_type": "system", "description": description, "document": document},
        )


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_policies")]
    operations = [migrations.RunPython(create_system_policies, migrations.RunPython.noop)]
