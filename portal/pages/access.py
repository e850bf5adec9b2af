"""The Access (RAM) pages (API.md §8, §11): members, groups and policies; a policy's JSON editor,
its attachments and its deletion; the policy simulator.

Each view declares the RAM action and resource of its API twin (portal/api/ram_views.py) and
calls the same services and selectors: a policy is validated by `ram.create_policy` /
`ram.update_policy` (the evaluator's own validation), and the simulator answers through
`ram.simulate`, as `POST /api/v1/ram/simulate` does."""

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from portal.api.permissions import RamTarget, request_context, the_object, whole_collection
from portal.models import Department, Group, Member, Policy
from portal.pages.door import RamPage
from portal.ram import services as ram
from portal.ram.actions import get_action, member_actions
from portal.selectors import attachments_of, groups_with_policies, members_with_policies, visible_policies

PAGE_SIZE = 25


# --- forms ------------------------------------------------------------------------------------

class PolicyEditForm(forms.Form):
    """The JSON editor. The form only parses the text; whether the document is a valid policy is
    the service's decision (the evaluator's validation), reported in the same error list."""

    description = forms.CharField(required=False, max_length=1024, label=_("Description"),
                                  widget=forms.TextInput(attrs={"size": 60}))
    document = forms.CharField(
        label=_("Policy document (JSON)"), strip=False,
        widget=forms.Textarea(attrs={"rows": 22, "spellcheck": "false", "autocapitalize": "off",
                                     "data-testid": "policy-editor", "class": "policy-editor"}),
    )

    def clean_document(self) -> Any:
        text = self.cleaned_data["document"]
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                _("This is not valid JSON: %(reason)s (line %(line)s, column %(column)s)."),
                params={"reason": error.msg, "line": error.lineno, "column": error.colno}, code="json",
            ) from error

    def add_service_errors(self, error: ram.PolicyError) -> None:
        # The service prefixes each reason with what it is about; name clashes belong by the name.
        for reason in error.errors:
            field = "name" if reason.startswith("name:") and "name" in self.fields else "document"
            self.add_error(field, reason)


class PolicyCreateForm(PolicyEditForm):
    name = forms.RegexField(
        ram.POLICY_NAME_PATTERN, max_length=128, label=_("Name"),
        help_text=_("Letters, digits, dot, dash and underscore; it names the policy in URLs and resources."),
        error_messages={"invalid": _("Use only letters, digits, dot, dash and underscore (at most 128).")},
    )
    field_order = ["name", "description", "document"]


class AttachForm(forms.Form):
    """Exactly one of a member or a group of the organization, as the API requires."""

    member = forms.ModelChoiceField(queryset=Member.objects.none(), to_field_name="uuid", required=False,
                                    label=_("Member"))
    group = forms.ModelChoiceField(queryset=Group.objects.none(), to_field_name="uuid", required=False,
                                   label=_("Group"))

    def __init__(self, *args, organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["member"].queryset = Member.objects.filter(organization=organization).select_related("user")
        self.fields["group"].queryset = Group.objects.filter(organization=organization)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if bool(data.get("member")) == bool(data.get("group")):
            raise forms.ValidationError(_("Choose exactly one member or one group."), code="one_principal")
        return data


class ActionSelect(forms.Select):
    """The registered actions, each option carrying the resource it is checked against in this
    organization, so the page can suggest it as the resource."""

    def __init__(self, *args, resources: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.resources = resources or {}

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        if value in self.resources:
            option["attrs"]["data-resource"] = self.resources[value]
        return option


class SimulateForm(forms.Form):
    member = forms.ModelChoiceField(queryset=Member.objects.none(), to_field_name="uuid", label=_("Member"))
    action = forms.ChoiceField(label=_("Action"))
    resource = forms.CharField(
        required=False, max_length=1024, label=_("Resource"),
        help_text=_("Leave empty for the action's whole collection in this organization."),
        widget=forms.TextInput(attrs={"class": "mono", "size": 48}),
    )
    source_ip = forms.GenericIPAddressField(required=False, label=_("Source IP (acs:SourceIp)"),
                                            help_text=_("Empty: your own address."))
    department = forms.ModelChoiceField(queryset=Department.objects.none(), to_field_name="uuid", required=False,
                                        label=_("Department (usage:DepartmentId)"), empty_label=_("None"))

    def __init__(self, *args, organization, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization
        self.fields["member"].queryset = Member.objects.filter(organization=organization).select_related("user")
        self.fields["department"].queryset = Department.objects.filter(organization=organization).order_by("name")
        actions = member_actions()
        by_service: dict[str, list[tuple[str, str]]] = {}
        for action in actions:
            by_service.setdefault(action.service, []).append((action.name, action.name))
        self.fields["action"].choices = list(by_service.items())
        self.fields["action"].widget = ActionSelect(
            choices=self.fields["action"].choices,
            resources={action.name: action.resource(organization.pk) for action in actions},
        )

    def the_resource(self) -> str:
        return self.cleaned_data["resource"] or get_action(self.cleaned_data["action"]).resource(self.organization.pk)

    def context_overrides(self) -> dict[str, str]:
        """The condition keys the visitor set; the rest of the context is their own request's."""
        overrides = {}
        if self.cleaned_data.get("source_ip"):
            overrides["acs:SourceIp"] = self.cleaned_data["source_ip"]
        if self.cleaned_data.get("department"):
            overrides["usage:DepartmentId"] = str(self.cleaned_data["department"].pk)
        return overrides


# --- the overview -------------------------------------------------------------------------------

def _page(request, rows, parameter: str):
    """One page of one of the overview's lists; each list has its own page parameter, and its
    links keep the others' pages."""
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get(parameter))

    def link(number: int) -> str:
        query = request.GET.copy()
        query[parameter] = str(number)
        return "?" + query.urlencode()

    page.previous_link = link(page.previous_page_number()) if page.has_previous() else None
    page.next_link = link(page.next_page_number()) if page.has_next() else None
    return page


class AccessPage(RamPage):
    """Policies (the page's own action, as `GET /ram/policies`); members and groups for those who
    may list members (`GET /ram/members`)."""

    ram_actions = {"GET": "ram:ListPolicies"}
    ram_resource = whole_collection

    def get(self, request):
        organization = request.organization
        policies = visible_policies(organization)
        context = {
            "system_policies": policies.filter(policy_type=Policy.Type.SYSTEM).order_by("name"),
            "custom_policies": _page(request, policies.filter(policy_type=Policy.Type.CUSTOM).order_by("name"),
                                     "policies_page"),
            "can_create": self.can("ram:CreatePolicy"),
            "can_simulate": self.can("ram:SimulatePolicy"),
            "can_list_members": self.can("ram:ListMembers"),
        }
        if context["can_list_members"]:
            context["members"] = _page(request, members_with_policies(organization), "members_page")
            context["groups"] = _page(request, groups_with_policies(organization), "groups_page")
        return render(request, "portal/access/index.html", context)


# --- one policy ----------------------------------------------------------------------------------

class PolicyObjectPage(RamPage):
    """A policy named in the URL, found among the organization's and the system's (another
    organization's is simply not found: 404) and decided as `policy/<name>`, as the API does."""

    ram_resource = the_object
    lookup_url_kwarg = lookup_field = "name"

    def get_queryset(self):
        return visible_policies(self.request.organization)

    def ram_target_of(self, policy: Policy) -> RamTarget:
        return RamTarget(policy.name)

    def policy_url(self) -> str:
        return reverse("portal:access-policy", args=[self.get_object().name])


def _action_reference(organization) -> list[dict[str, str]]:
    """The registered actions and the resource each is checked against here, beside the editor."""
    return [{"name": action.name, "resource": action.resource(organization.pk)} for action in member_actions()]


def _pretty(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def _starter_document(organization) -> dict[str, Any]:
    # A working example to edit rather than an empty box: read the usage of the whole organization.
    return {"Version": "1", "Statement": [{
        "Sid": "ReadUsage", "Effect": "Allow", "Action": ["usage:QueryUsage", "usage:GetDashboard"],
        "Resource": get_action("usage:QueryUsage").resource(organization.pk),
    }]}


class PolicyCreatePage(RamPage):
    ram_actions = {"GET": "ram:CreatePolicy", "POST": "ram:CreatePolicy"}
    ram_resource = whole_collection

    def get(self, request):
        initial = {"document": _pretty(_starter_document(request.organization))}
        # "Copy into a new policy" from a policy page: its document, under a new name. Found like
        # any policy of the organization, so another organization's cannot be copied.
        source = visible_policies(request.organization).filter(name=request.GET.get("from", "")).first()
        if source is not None:
            initial = {"name": f"{source.name}Copy", "description": source.description,
                       "document": _pretty(source.effective_document)}
        return self._render(PolicyCreateForm(initial=initial))

    def post(self, request):
        form = PolicyCreateForm(request.POST)
        if form.is_valid():
            try:
                policy = ram.create_policy(actor=self.actor(), organization=request.organization,
                                           name=form.cleaned_data["name"], document=form.cleaned_data["document"],
                                           description=form.cleaned_data["description"])
            except ram.PolicyError as error:
                form.add_service_errors(error)
            else:
                messages.success(request, gettext("Policy %(name)s created.") % {"name": policy.name})
                return redirect("portal:access-policy", policy.name)
        return self._render(form)

    def _render(self, form):
        return render(self.request, "portal/access/policy_new.html",
                      {"form": form, "actions": _action_reference(self.request.organization)})


class PolicyDetailPage(PolicyObjectPage):
    """The policy's document in the JSON editor (custom policies) or read-only (system ones),
    and whom it is attached to in this organization."""

    ram_actions = {"GET": "ram:GetPolicy", "POST": "ram:UpdatePolicy"}

    def get(self, request, name):
        policy = self.get_object()
        form = None
        if policy.policy_type == Policy.Type.CUSTOM and self.can("ram:UpdatePolicy", RamTarget(policy.name)):
            form = PolicyEditForm(initial={"description": policy.description,
                                           "document": _pretty(policy.effective_document)})
        return self._render(policy, form)

    def post(self, request, name):
        policy = self.get_object()
        if policy.policy_type == Policy.Type.SYSTEM:
            # No editor is offered, and a hand-made POST is refused (the service would refuse it too).
            refused = [gettext("%(name)s is a system policy: it cannot be changed. Copy it into a new "
                               "policy and edit the copy.") % {"name": policy.name}]
            return self._render(policy, None, refused=refused, status=400)
        form = PolicyEditForm(request.POST)
        if form.is_valid():
            try:
                ram.update_policy(actor=self.actor(), policy=policy, document=form.cleaned_data["document"],
                                  description=form.cleaned_data["description"])
            except ram.PolicyError as error:
                form.add_service_errors(error)
            else:
                messages.success(request, gettext("Policy %(name)s saved.") % {"name": policy.name})
                return redirect("portal:access-policy", policy.name)
        return self._render(policy, form)

    def _render(self, policy: Policy, form, *, refused=None, status: int = 200):
        request, target = self.request, RamTarget(policy.name)
        custom = policy.policy_type == Policy.Type.CUSTOM
        can_list_members = self.can("ram:ListMembers")
        context = {
            "policy": policy, "form": form, "custom": custom, "refused": refused,
            "document": _pretty(policy.effective_document),
            "can_delete": custom and self.can("ram:DeletePolicy", target),
            "can_create": self.can("ram:CreatePolicy"),
            "can_simulate": self.can("ram:SimulatePolicy"),
            "can_list_members": can_list_members,
            "can_detach": self.can("ram:DetachPolicy", target),
            "actions": _action_reference(request.organization) if form is not None else (),
        }
        if can_list_members:
            attached = attachments_of(policy, request.organization)
            # One shape for both kinds of principal; `field` is what the detach form posts, as the API's body.
            context["attachments"] = [
                {"field": "member", "uuid": a.member.uuid, "name": a.member.user.get_username()} if a.member
                else {"field": "group", "uuid": a.group.uuid, "name": a.group.name}
                for a in attached
            ]
            if self.can("ram:AttachPolicy", target):
                members = {a.member_id for a in attached}
                groups = {a.group_id for a in attached}
                context["attach_members"] = [m for m in members_with_policies(request.organization)
                                             if m.pk not in members]
                context["attach_groups"] = [g for g in groups_with_policies(request.organization) if g.pk not in groups]
                context["can_attach"] = True
        return render(request, "portal/access/policy.html", context, status=status)


class PolicyDeletePage(PolicyObjectPage):
    ram_actions = {"POST": "ram:DeletePolicy"}

    def post(self, request, name):
        policy = self.get_object()
        try:
            ram.delete_policy(actor=self.actor(), policy=policy)
        except ram.PolicyError as error:
            messages.error(request, "; ".join(error.errors))
            return redirect("portal:access-policy", policy.name)
        messages.success(request, gettext("Policy %(name)s deleted.") % {"name": name})
        return redirect("portal:access")


class PolicyAttachPage(PolicyObjectPage):
    ram_actions = {"POST": "ram:AttachPolicy"}
    attach = True

    def post(self, request, name):
        policy = self.get_object()
        form = AttachForm(request.POST, organization=request.organization)
        if not form.is_valid():
            for errors in form.errors.values():
                for error in errors:
                    messages.error(request, error)
            return redirect(self.policy_url())
        member, group = form.cleaned_data.get("member"), form.cleaned_data.get("group")
        principal = member or group
        try:
            if self.attach:
                ram.attach_policy(actor=self.actor(), policy=policy, member=member, group=group)
                done = gettext("Policy %(policy)s attached to %(principal)s.")
            else:
                ram.detach_policy(actor=self.actor(), policy=policy, member=member, group=group)
                done = gettext("Policy %(policy)s detached from %(principal)s.")
        except ram.PolicyError as error:
            messages.error(request, "; ".join(error.errors))
        else:
            messages.success(request, done % {"policy": policy.name, "principal": principal})
        return redirect(self.policy_url())


class PolicyDetachPage(PolicyAttachPage):
    ram_actions = {"POST": "ram:DetachPolicy"}
    attach = False


# --- the simulator -------------------------------------------------------------------------------

class SimulatePage(RamPage):
    """The policy simulator. A read with no side effect, so the form is a GET and a result can be
    linked to; the decision is `ram.simulate`'s, the function the API's simulator calls."""

    ram_actions = {"GET": "ram:SimulatePolicy"}
    ram_resource = whole_collection

    def get(self, request):
        organization = request.organization
        asked = "action" in request.GET
        form = SimulateForm(request.GET if asked else None, organization=organization,
                            initial={"member": request.GET.get("member")})
        result = None
        if asked and form.is_valid():
            resource = form.the_resource()
            # As the API does: the visitor's own network facts unless the form overrides them.
            context = {**request_context(request), **form.context_overrides()}
            decision = ram.simulate(member=form.cleaned_data["member"], action_name=form.cleaned_data["action"],
                                    resource=resource, context=context)
            result = {"decision": decision, "resource": resource, "member": form.cleaned_data["member"],
                      "action": form.cleaned_data["action"], "overrides": form.context_overrides(),
                      "source_ip": context.get("acs:SourceIp")}
        return render(request, "portal/access/simulate.html", {"form": form, "result": result})


urlpatterns = [
    path("access/", AccessPage.as_view(), name="access"),
    path("access/policies/new/", PolicyCreatePage.as_view(), name="access-policy-new"),
    path("access/policies/<str:name>/", PolicyDetailPage.as_view(), name="access-policy"),
    path("access/policies/<str:name>/delete/", PolicyDeletePage.as_view(), name="access-policy-delete"),
    path("access/policies/<str:name>/attach/", PolicyAttachPage.as_view(), name="access-policy-attach"),
    path("access/policies/<str:name>/detach/", PolicyDetachPage.as_view(), name="access-policy-detach"),
    path("access/simulate/", SimulatePage.as_view(), name="access-simulate"),
]
