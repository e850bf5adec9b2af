"""The action registry: every RAM action the API knows, with its access level, the resource it
is checked against, its condition keys and the management-key scope that covers it.

Plain Python (no Django). Each endpoint names one of these actions; `GET /api/v1/ram/actions`
serves this table; the system policies (ReadOnlyAccess, ...) are derived from it, so they grow
with it.
"""

from dataclasses import dataclass
from typing import Final

LIST, READ, WRITE, PERMISSIONS = "list", "read", "write", "permissions-management"
GLOBAL_CONDITION_KEYS: Final = ("acs:SourceIp", "acs:CurrentTime", "acs:SecureTransport", "acs:MFAPresent")
DEPARTMENT_CONDITION_KEY: Final = "usage:DepartmentId"


@dataclass(frozen=True)
class Action:
    name: str  # service:ActionName
    access_level: str
    # The resource this action is checked against: acs:<resource_service>:*:<org>:<resource_type>/<id>
    resource_service: str
    resource_type: str
    scope: str  # the management-key scope that covers it, e.g. "usage:read"
    description: str
    department_scoped: bool = False  # whether usage:DepartmentId is set when the request names one
    platform_only: bool = False  # performed by the platform's service token, never by a member
    # Open to every member of an organization without a policy (seed 001 lists "tabs" with no action).
    member_baseline: bool = False

    @property
    def service(self) -> str:
        return self.name.split(":", 1)[0]

    @property
    def condition_keys(self) -> tuple[str, ...]:
        if self.platform_only:
            return ()
        return GLOBAL_CONDITION_KEYS + ((DEPARTMENT_CONDITION_KEY,) if self.department_scoped else ())

    def resource(self, organization_id: int | str, resource_id: int | str = "*") -> str:
        return f"acs:{self.resource_service}:*:{organization_id}:{self.resource_type}/{resource_id}"


def _a(name: str, level: str, service: str, rtype: str, scope: str, description: str, **flags: bool) -> Action:
    return Action(name, level, service, rtype, scope, description, **flags)


_ACTIONS: Final = [
    # Inference keys (AIone key API).
    _a("keys:ListKeys", LIST, "keys", "apikey", "keys:read", "List inference keys", department_scoped=True),
    _a("keys:GetKey", READ, "keys", "apikey", "keys:read", "Read an inference key", department_scoped=True),
    _a("keys:CreateKey", WRITE, "keys", "apikey", "keys:write", "Create an inference key", department_scoped=True),
    _a("keys:UpdateKey", WRITE, "keys", "apikey", "keys:write", "Update an inference key", department_scoped=True),
    _a("keys:DeleteKey", WRITE, "keys", "apikey", "keys:write", "Delete an inference key", department_scoped=True),
    _a("keys:RotateKey", WRITE, "keys", "apikey", "keys:write", "Rotate an inference key", department_scoped=True),
    _a("keys:DisableKey", WRITE, "keys", "apikey", "keys:write", "Disable an inference key", department_scoped=True),
    _a("keys:EnableKey", WRITE, "keys", "apikey", "keys:write", "Enable an inference key", department_scoped=True),
    _a("keys:VerifyKey", READ, "keys", "apikey", "platform", "Verify an inference key (gateway)",
       platform_only=True),
    # The gateway's upstreams (API.md §12): platform operators only.
    _a("gateway:ListUpstreams", LIST, "gateway", "upstream", "platform", "List the gateway's upstreams",
       platform_only=True),
    _a("gateway:CreateUpstream", WRITE, "gateway", "upstream", "platform", "Add an upstream to the gateway",
       platform_only=True),
    _a("gateway:DeleteUpstream", WRITE, "gateway", "upstream", "platform", "Remove an upstream from the gateway",
       platform_only=True),
    # Catalog.
    _a("models:ListModels", LIST, "models", "model", "models:read", "List the model catalog"),
    # Usage and analytics.
    _a("usage:IngestEvents", WRITE, "usage", "event", "platform", "Report usage events (gateway)",
       platform_only=True),
    _a("usage:QueryUsage", LIST, "usage", "department", "usage:read", "Query usage", department_scoped=True),
    _a("usage:GetDashboard", READ, "usage", "department", "usage:read", "Read the dashboard",
       department_scoped=True),
    _a("usage:QueryCallStats", LIST, "usage", "department", "usage:read", "Query call statistics (Weave)",
       department_scoped=True),
    _a("aicontent:ModelRouterQueryCostTabs", LIST, "usage", "department", "usage:read",
       "Cost page tabs (model type groups)", member_baseline=True),
    _a("aicontent:ModelRouterQueryCostOverviewMetrics", LIST, "usage", "department", "usage:read",
       "Cost overview metrics", department_scoped=True),
    _a("aicontent:ModelRouterQueryCostTrendMetrics", LIST, "usage", "department", "usage:read",
       "Cost trend", department_scoped=True),
    _a("aicontent:ModelRouterQueryCostModelList", LIST, "usage", "department", "usage:read",
       "Cost by model", department_scoped=True),
    _a("aicontent:ModelRouterQueryCostModelDetail", LIST, "usage", "department", "usage:read",
       "Cost detail of one model", department_scoped=True),
    _a("aicontent:ModelRouterQueryBillingCostBreakdown", LIST, "usage", "department", "usage:read",
       "Cost breakdown", department_scoped=True),
    _a("management:QueryUsage", LIST, "usage", "department", "usage:read", "Token usage (r9s)"),
    _a("management:GetBalance", READ, "billing", "account", "balance:read", "Account balance (r9s)"),
    # Billing.
    _a("billing:GetCurrentPlan", READ, "billing", "plan", "billing:read", "Read the current plan"),
    _a("billing:GetBillingAccount", READ, "billing", "account", "billing:read", "Read the billing account"),
    _a("billing:ListInvoices", LIST, "billing", "invoice", "billing:read", "List invoices"),
    _a("billing:GetInvoice", READ, "billing", "invoice", "billing:read", "Read an invoice"),
    _a("billing:CreateCreditNote", WRITE, "billing", "invoice", "billing:write", "Issue a credit note on an invoice"),
    _a("billing:ListCreditGrants", LIST, "billing", "grant", "billing:read", "List credit grants"),
    _a("billing:CreateCreditGrant", WRITE, "billing", "grant", "platform", "Grant credit (platform operators)",
       platform_only=True),
    _a("billing:ListBudgets", LIST, "billing", "budget", "billing:read", "List budgets"),
    _a("billing:CreateBudget", WRITE, "billing", "budget", "billing:write", "Create a budget"),
    _a("billing:GetBudget", READ, "billing", "budget", "billing:read", "Read a budget"),
    _a("billing:UpdateBudget", WRITE, "billing", "budget", "billing:write", "Update a budget"),
    _a("billing:DeleteBudget", WRITE, "billing", "budget", "billing:write", "Delete a budget"),
    _a("billing:ListWebhooks", LIST, "billing", "webhook", "billing:read", "List webhooks"),
    _a("billing:CreateWebhook", WRITE, "billing", "webhook", "billing:write", "Create a webhook"),
    _a("billing:DeleteWebhook", WRITE, "billing", "webhook", "billing:write", "Delete a webhook"),
    _a("billing:ListWebhookDeliveries", LIST, "billing", "webhook", "billing:read", "List a webhook's deliveries"),
    _a("billing:ListBillingUsage", LIST, "billing", "ledger", "billing:read", "Billing usage records (Venice)"),
    _a("billing:GetUsageAnalytics", READ, "billing", "ledger", "billing:read", "Usage analytics (Venice)"),
    _a("billing:ListBillingUsageHistory", LIST, "billing", "ledger", "billing:read",
       "Billing usage history in cursor pages (Venice)"),
    _a("billing:GetBalance", READ, "billing", "account", "billing:read", "Account balance (Venice)"),
    # RAM itself.
    _a("ram:ListActions", LIST, "ram", "action", "ram:read", "List RAM actions"),
    _a("ram:ListPolicies", LIST, "ram", "policy", "ram:read", "List policies"),
    _a("ram:GetPolicy", READ, "ram", "policy", "ram:read", "Read a policy"),
    _a("ram:CreatePolicy", PERMISSIONS, "ram", "policy", "ram:write", "Create a policy"),
    _a("ram:UpdatePolicy", PERMISSIONS, "ram", "policy", "ram:write", "Update a policy"),
    _a("ram:DeletePolicy", PERMISSIONS, "ram", "policy", "ram:write", "Delete a policy"),
    _a("ram:AttachPolicy", PERMISSIONS, "ram", "policy", "ram:write", "Attach a policy"),
    _a("ram:DetachPolicy", PERMISSIONS, "ram", "policy", "ram:write", "Detach a policy"),
    _a("ram:SimulatePolicy", READ, "ram", "policy", "ram:read", "Simulate a decision"),
    _a("ram:ListMembers", LIST, "ram", "member", "ram:read", "List members"),
    _a("ram:ListAuditLog", LIST, "ram", "audit", "ram:read", "Read the audit log"),
    _a("ram:ListManagementKeys", LIST, "ram", "member", "ram:read", "List a member's management keys"),
    _a("ram:CreateManagementKey", PERMISSIONS, "ram", "member", "ram:write", "Create a management key"),
    _a("ram:RevokeManagementKey", PERMISSIONS, "ram", "member", "ram:write", "Revoke a management key"),
]

ACTIONS: Final[dict[str, Action]] = {action.name: action for action in _ACTIONS}


def get_action(name: str) -> Action:
    return ACTIONS[name]


def member_actions() -> list[Action]:
    return [action for action in _ACTIONS if not action.platform_only]


def scope_allows(scopes: list[str] | tuple[str, ...], action: Action) -> bool:
    """Whether a management key's scopes cover `action`; no scopes means no narrowing.
    A `<area>:write` scope covers that area's reads too."""
    if not scopes:
        return True
    area = action.scope.split(":", 1)[0]
    return action.scope in scopes or f"{area}:write" in scopes or "*" in scopes
