"""Calling the API as each persona: with a management key, as real clients do."""

import math

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


def percentile_cont(values, q):
    """PostgreSQL's percentile_cont: linear between the two values around rank (n - 1) * q / 100."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])
