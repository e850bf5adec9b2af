"""The gateway's upstreams (API.md §12): `POST/GET /api/v1/gateway/upstreams`,
`DELETE /api/v1/gateway/upstreams/{id}`; the platform's service token only (operators), as credit
grants. The provider's API key is accepted, stored encrypted and never shown again."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from keys import services
from keys.api.serializers import EntryListField, validate_model_codes
from keys.models import Upstream
from portal.api.errors import FieldProblem, InvalidRequest
from portal.api.permissions import whole_collection
from portal.api.schema import aione
from portal.api.views import RamAPIView, parse_body, request_actor

_S = serializers


class UpstreamCreate(_S.Serializer):
    name = _S.CharField(max_length=200)
    base_url = _S.URLField(max_length=500, help_text="An OpenAI-compatible API base, e.g. https://host/v1")
    api_key = _S.CharField(max_length=4000, write_only=True, trim_whitespace=True,
                           help_text="The provider's key: stored encrypted, never shown again")
    models = EntryListField(child=_S.CharField(max_length=100), allow_empty=False,
                          validators=[validate_model_codes], help_text="Model codes of the catalog")
    timeout_seconds = _S.IntegerField(required=False, default=60, min_value=1, max_value=3600)
    max_retries = _S.IntegerField(required=False, default=2, min_value=0, max_value=10)


UpstreamShape = inline_serializer("Upstream", {
    "id": _S.UUIDField(), "name": _S.CharField(), "base_url": _S.CharField(),
    "models": _S.ListField(child=_S.CharField()), "timeout_seconds": _S.IntegerField(),
    "max_retries": _S.IntegerField()})
UpstreamList = inline_serializer("UpstreamList", {"items": _S.ListField(child=UpstreamShape),
                                                  "total": _S.IntegerField()})


def upstream_body(upstream: Upstream) -> dict:
    return {"id": str(upstream.uuid), "name": upstream.name, "base_url": upstream.base_url,
            "models": upstream.model_codes, "timeout_seconds": upstream.timeout_seconds,
            "max_retries": upstream.max_retries}


class UpstreamListCreateView(RamAPIView):
    ram_actions = {"GET": "gateway:ListUpstreams", "POST": "gateway:CreateUpstream"}
    ram_resource = whole_collection

    @aione(UpstreamList, description="Service token only (platform operators).")
    def get(self, request):
        items = [upstream_body(upstream) for upstream in Upstream.objects.order_by("name")]
        return Response({"items": items, "total": len(items)})

    @aione(UpstreamShape, request=UpstreamCreate, status=201,
           description="Service token only (platform operators). The api_key is stored encrypted and never returned.")
    def post(self, request):
        data = parse_body(UpstreamCreate, request)
        try:
            upstream = services.create_upstream(
                actor=request_actor(request), name=data["name"], base_url=data["base_url"],
                api_key=data["api_key"], model_codes=data["models"], timeout_seconds=data["timeout_seconds"],
                max_retries=data["max_retries"])
        except services.UpstreamRefused as error:
            raise InvalidRequest([FieldProblem(["body", error.field], error.message)]) from error
        return Response(upstream_body(upstream), status=status.HTTP_201_CREATED)


class UpstreamDetailView(RamAPIView):
    ram_actions = {"DELETE": "gateway:DeleteUpstream"}
    ram_resource = whole_collection

    @aione(None, status=204, description="Service token only (platform operators).")
    def delete(self, request, upstream_id):
        upstream = get_object_or_404(Upstream, uuid=upstream_id)
        services.delete_upstream(actor=request_actor(request), upstream=upstream)
        return Response(status=status.HTTP_204_NO_CONTENT)
