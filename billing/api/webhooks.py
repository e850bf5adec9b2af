"""AIone dialect, webhooks (API.md §10): `/api/v1/billing/webhooks` (list, create),
`/api/v1/billing/webhooks/{id}` (delete) and `.../{id}/deliveries`. Thin: parse, authorize, call
billing.webhooks, render. The signing secret appears in the create response only."""

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from billing import webhooks
from billing.models import Webhook
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.fields import StrictCharField
from portal.api.permissions import RamTarget, whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, RamObjectView, parse_body, request_actor

_S = serializers


class WebhookCreateRequest(_S.Serializer):
    url = StrictCharField(max_length=2000, help_text="http or https; private network addresses are refused "
                                                  "unless WEBHOOK_ALLOW_PRIVATE_NETWORKS")
    events = _S.ListField(child=_S.ChoiceField(choices=webhooks.EVENT_TYPES), allow_empty=False)


_WEBHOOK_FIELDS = {"id": _S.UUIDField(), "url": _S.CharField(), "events": _S.ListField(child=_S.CharField()),
                   "created_at": _S.DateTimeField()}
WebhookResponse = inline_serializer("Webhook", _WEBHOOK_FIELDS)
WebhookCreateResponse = inline_serializer("WebhookCreated", {
    **_WEBHOOK_FIELDS, "secret": _S.CharField(help_text="whsec_…: shown this once")})
WebhookListResponse = inline_serializer("WebhookListResponse", {
    "items": inline_serializer("WebhookItem", _WEBHOOK_FIELDS, many=True), "total": _S.IntegerField()})
WebhookDeliveryListResponse = inline_serializer("WebhookDeliveryListResponse", {
    "items": inline_serializer("WebhookDelivery", {
        "id": _S.UUIDField(), "event_id": _S.UUIDField(), "type": _S.CharField(),
        "status_code": _S.IntegerField(allow_null=True), "attempts": _S.IntegerField(),
        "delivered_at": _S.DateTimeField(allow_null=True), "next_attempt_at": _S.DateTimeField(allow_null=True),
    }, many=True)})


def _webhook_body(webhook: Webhook) -> dict:
    return {"id": str(webhook.uuid), "url": webhook.url, "events": list(webhook.events),
            "created_at": webhook.created_at}


class WebhookListCreateView(RamAPIView):
    ram_actions = {"GET": "billing:ListWebhooks", "POST": "billing:CreateWebhook"}
    # Webhooks belong to no department: the decision is on the organization's `webhook/*`.
    ram_resource = whole_collection

    @aione(WebhookListResponse)
    def get(self, request):
        items = [_webhook_body(webhook) for webhook in webhooks.webhooks_of(request.organization)]
        return Response({"items": items, "total": len(items)})

    @aione(WebhookCreateResponse, request=WebhookCreateRequest, status=201,
           description="Subscribe an endpoint; the response carries its signing `secret`, shown this once.")
    def post(self, request):
        data = parse_body(WebhookCreateRequest, request)
        try:
            webhook, secret = webhooks.create_webhook(actor=request_actor(request), organization=request.organization,
                                                      url=data["url"], events=data["events"])
        except webhooks.WebhookRefused as refused:
            raise InvalidRequest([FieldProblem(["body", refused.field], refused.message)]) from refused
        return Response({**_webhook_body(webhook), "secret": secret}, status=status.HTTP_201_CREATED)


class WebhookObjectView(RamObjectView):
    lookup_url_kwarg = "webhook_id"

    def get_queryset(self):
        return webhooks.webhooks_of(self.request.organization)

    def ram_target_of(self, webhook: Webhook) -> RamTarget:
        return RamTarget(webhook.pk)


class WebhookDetailView(WebhookObjectView):
    ram_actions = {"DELETE": "billing:DeleteWebhook"}

    @aione(None, status=204, description="Stops deliveries to the endpoint; its delivery log is kept.")
    def delete(self, request, webhook_id):
        webhooks.delete_webhook(actor=request_actor(request), webhook=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListView(WebhookObjectView):
    ram_actions = {"GET": "billing:ListWebhookDeliveries"}

    @aione(WebhookDeliveryListResponse, description="The endpoint's deliveries, newest first.")
    def get(self, request, webhook_id):
        items = [{"id": str(delivery.uuid), "event_id": str(delivery.event.uuid), "type": delivery.event.type,
                  "status_code": delivery.status_code, "attempts": delivery.attempts,
                  "delivered_at": delivery.delivered_at, "next_attempt_at": delivery.next_attempt_at}
                 for delivery in webhooks.deliveries_of(self.get_object())]
        return Response({"items": items})
