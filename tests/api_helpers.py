"""Calling the API as each persona: with a management key, as real clients do."""

from rest_framework.test import APIClient

from keys import services as key_services
from portal.models import Member
from portal.ram import services as ram
from portal.services import SYSTEM


def client_for(member: Member, *, scopes: list[str] | None = None) -> APIClient:
    secret = key_services.create_management_key(actor=SYSTEM, member=member, name="tests", scopes=scopes).secret
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def attach(member: Member, *policy_names: str) -> None:
    for name in policy_names:
        ram.attach_policy(actor=SYSTEM, policy=ram.system_policy(name), member=member)
