"""Secrets for every kind of credential: generation, keyed hashing, display prefixes.

Only an HMAC-SHA256 of a secret (keyed with settings.KEY_PEPPER) is ever stored; the secret
itself is returned once, to whoever created or rotated the key.
"""

import hashlib
import hmac
import secrets
from enum import StrEnum

from django.conf import settings


class SecretKind(StrEnum):
    INFERENCE = "sk-"
    MANAGEMENT = "sk_mg_"
    SERVICE = "sk_svc_"


DISPLAY_CHARS = 8  # characters of the secret body kept visible after the prefix


def generate_secret(kind: SecretKind) -> str:
    if kind is SecretKind.INFERENCE:
        return kind.value + secrets.token_urlsafe(36)  # 48 url-safe characters
    return kind.value + secrets.token_hex(32)  # 64 hex characters


def hash_secret(secret: str) -> str:
    return hmac.new(settings.KEY_PEPPER.encode(), secret.encode(), hashlib.sha256).hexdigest()


def display_prefix(secret: str) -> str:
    """The part of a secret that may be shown forever: its kind and a few characters."""
    for kind in (SecretKind.SERVICE, SecretKind.MANAGEMENT, SecretKind.INFERENCE):
        if secret.startswith(kind.value):
            return secret[: len(kind.value) + DISPLAY_CHARS]
    return secret[:DISPLAY_CHARS]


def kind_of(secret: str) -> SecretKind | None:
    for kind in (SecretKind.SERVICE, SecretKind.MANAGEMENT, SecretKind.INFERENCE):
        if secret.startswith(kind.value):
            return kind
    return None


def hashes_match(stored_hash: str, secret: str) -> bool:
    return hmac.compare_digest(stored_hash, hash_secret(secret))
