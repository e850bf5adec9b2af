from django.db import migrations


def sync_system_policies(apps, schema_editor):
    # The system policies are derived from the action registry; ram:ListAuditLog joined it.
    from portal.ram.system_policies import system_policy_documents

    Policy = apps.get_model("portal", "Policy")
    for name, (description, document) in system_policy_documents().items():
        Policy.objects.update_or_create(
            organization=None, name=name,
            defaults={"policy_type": "system", "description": description, "document": document},
        )


class Migration(migrations.Migration):
    dependencies = [("portal", "0005_member_of_several_organizations")]
    operations = [migrations.RunPython(sync_system_policies, migrations.RunPython.noop)]
