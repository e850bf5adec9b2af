"""A secret is shown once, to its creator; never in logs, audit rows or later responses."""

import logging

from django.core.cache import cache
from rest_framework.test import APIClient

from keys import services
from portal.models import AuditLog
from portal.services import SYSTEM
from tests.api_helpers import client_for


def test_no_secret_reaches_logs_audit_or_later_responses(ram_world, caplog):
    caplog.set_level(logging.DEBUG)
    alice = client_for(ram_world.alice)
    created = alice.post("/api/v1/gateway/keys", {"name": "app", "team_id": str(ram_world.research.uuid)},
                         format="json", REMOTE_ADDR="198.51.100.7").json()
    rotated = alice.put(f"/api/v1/gateway/keys/{created['id']}/rotate").json()
    management = alice.post(f"/api/v1/ram/members/{ram_world.bob.uuid}/management-keys", {"name": "m"},
                            format="json").json()
    gateway = APIClient()
    gateway.credentials(HTTP_AUTHORIZATION=f"Bearer {services.create_service_token(actor=SYSTEM, name='g').secret}")
    gateway.post("/api/v1/gateway/keys/verify", {"key": rotated["key"]}, format="json")
    gateway.post("/api/v1/gateway/keys/verify", {"key": "sk-unknown" + "x" * 40}, format="json")
    secrets = [created["key"], rotated["key"], management["api_key"]]

    later = [alice.get("/api/v1/gateway/keys").content.decode(),
             alice.get(f"/api/v1/gateway/keys/{created['id']}").content.decode(),
             alice.get(f"/api/v1/ram/members/{ram_world.bob.uuid}/management-keys").content.decode()]
    audit = [str(row) + str(row.detail) for row in AuditLog.objects.all()]
    logged = caplog.text
    for secret in secrets:
        assert secret not in logged
        assert all(secret not in text for text in later + audit)
    created_row = AuditLog.objects.get(action="inference_key.create", actor__user__username="alice")
    assert created_row.source_ip == "198.51.100.7" and created_row.detail["key_prefix"] == created["key_prefix"]
    cache.clear()
