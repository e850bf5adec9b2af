from django.urls import path

from keys.api import management_keys, upstreams, views

urlpatterns = [
    path("gateway/keys", views.KeyListCreateView.as_view(), name="keys-list"),
    path("gateway/keys/verify", views.VerifyKeyView.as_view(), name="keys-verify"),
    path("gateway/upstreams", upstreams.UpstreamListCreateView.as_view(), name="gateway-upstreams"),
    path("gateway/upstreams/<uuid:upstream_id>", upstreams.UpstreamDetailView.as_view(), name="gateway-upstream"),
    path("gateway/keys/<uuid:key_id>", views.KeyDetailView.as_view(), name="keys-detail"),
    path("gateway/keys/<uuid:key_id>/rotate", views.KeyRotateView.as_view(), name="keys-rotate"),
    path("gateway/keys/<uuid:key_id>/disable", views.KeyDisableView.as_view(), name="keys-disable"),
    path("gateway/keys/<uuid:key_id>/enable", views.KeyEnableView.as_view(), name="keys-enable"),
    # Members' management keys live under RAM's members (API.md §8) but are keys' business.
    path("ram/members/<uuid:member_uuid>/management-keys", management_keys.ManagementKeyListCreateView.as_view(),
         name="ram-management-keys"),
    path("ram/members/<uuid:member_uuid>/management-keys/<int:key_id>/revoke",
         management_keys.ManagementKeyRevokeView.as_view(), name="ram-management-key-revoke"),
]
