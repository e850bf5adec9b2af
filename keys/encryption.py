"""Secrets the platform must read back (an upstream's API key, a webhook's signing secret),
encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`).

The key ring is settings.FIELD_ENCRYPTION_KEY (comma-separated Fernet keys from the environment):
the first key encrypts, every key decrypts, so a key is rotated by putting the new one first and
re-encrypting (`MultiFernet.rotate`). After the configured keys comes one derived from
SECRET_KEY per purpose: the zero-setup default of the demo and the tests, never meant for
production (set FIELD_ENCRYPTION_KEY there); kept last so that what it wrote stays readable
until re-encrypted.
"""

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["UPSTREAM_KEYS", "WEBHOOK_SECRETS", "key_ring"]

# HKDF's `info` per purpose: a leaked demo key of one purpose opens nothing of another.
WEBHOOK_SECRETS = b"webhook signing secrets"
UPSTREAM_KEYS = b"gateway upstream keys"


def _derived_key(secret_key: str, purpose: bytes) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"llm-portal field encryption",
                   info=purpose).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived)


@lru_cache(maxsize=16)
def _ring(configured: tuple[str, ...], secret_key: str, purpose: bytes) -> MultiFernet:
    keys = [key.encode() for key in configured] + [_derived_key(secret_key, purpose)]
    return MultiFernet([Fernet(key) for key in dict.fromkeys(keys)])


def key_ring(purpose: bytes) -> MultiFernet:
    """The ring for `purpose`, read from the settings at each call (tests change them)."""
    configured = tuple(key.strip() for key in settings.FIELD_ENCRYPTION_KEY if key.strip())
    return _ring(configured, settings.SECRET_KEY, purpose)
