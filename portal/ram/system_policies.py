"""System policies, derived from the action registry so that they follow it as it grows."""

from typing import Any, Final

from portal.ram.actions import LIST, READ, member_actions

ADMINISTRATOR_ACCESS: Final = "AdministratorAccess"
READ_ONLY_ACCESS: Final = "ReadOnlyAccess"
BILLING_FULL_ACCESS: Final = "BillingFullAccess"
KEY_MANAGER_ACCESS: Final = "KeyManagerAccess"
USAGE_READ_ONLY_ACCESS: Final = "UsageReadOnlyAccess"


def _allow(actions: list[str]) -> dict[str, Any]:
    return {"Version": "1", "Statement": [{"Effect": "Allow", "Action": sorted(actions), "Resource": "*"}]}


def _names(predicate) -> list[str]:
    return [action.name for action in member_actions() if predicate(action)]


def system_policy_documents() -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (description, document)."""
    return {
        ADMINISTRATOR_ACCESS: ("Every action on every resource of the organization.",
                               {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
        # By access level, not by name: aicontent:ModelRouterQueryCostModelDetail is a read too.
        READ_ONLY_ACCESS: ("Every list and read action.", _allow(_names(lambda a: a.access_level in (LIST, READ)))),
        BILLING_FULL_ACCESS: ("Billing: plan, account, invoices, billing usage.",
                              _allow(_names(lambda a: a.service in ("billing",) or a.name == "management:GetBalance"))),
        KEY_MANAGER_ACCESS: ("Create, change and read inference keys; read the catalog.",
                             _allow(_names(lambda a: a.service in ("keys", "models")))),
        USAGE_READ_ONLY_ACCESS: (
            "Read usage and analytics in every dialect.",
            _allow(_names(lambda a: a.resource_service == "usage" and a.access_level in (LIST, READ))),
        ),
    }


def sync_system_policies(policy_model) -> None:
    """Write the derived documents into the policy table (a migration passes its historical model):
    run when the registry gains an action, so ReadOnlyAccess and the others follow it."""
    for name, (description, document) in system_policy_documents().items():
        policy_model.objects.update_or_create(
            organization=None, name=name,
            defaults={"policy_type": "system", "description": description, "document": document},
        )
