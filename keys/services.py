"""Writes for credentials. Each returns the secret exactly once, beside the stored row."""

from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from keys.hashing import SecretKind, display_prefix, generate_secret, hash_secret
from keys.models import InferenceKey, ManagementKey, ServiceToken
from portal.models import Department, Member
from portal.services import Actor, record_audit


@dataclass(frozen=True)
class IssuedKey[K: (InferenceKey, ManagementKey, ServiceToken)]:
    key: K
    secret: str  # shown to the caller once, never stored


def _new_secret(kind: SecretKind) -> tuple[str, str, str]:
    secret = generate_secret(kind)
    return secret, hash_secret(secret), display_prefix(secret)


@transaction.atomic
def create_inference_key(
    *,
    actor: Actor,
    department: Department,
    name: str,
    owner: Member | None = None,
    models_allowed: list[str] | None = None,
    allowed_ips: list[str] | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    is_sandbox: bool = False,
    expires_at: datetime | None = None,
) -> IssuedKey[InferenceKey]:
    secret, secret_hash, prefix = _new_secret(SecretKind.INFERENCE)
    key = InferenceKey.objects.create(
        organization=department.organization,
        department=department,
        owner=owner or actor.member,
        name=name,
        key_prefix=prefix,
        secret_hash=secret_hash,
        models_allowed=models_allowed or [],
        allowed_ips=allowed_ips or [],
        rpm_limit=rpm_limit,
        tpm_limit=tpm_limit,
        is_sandbox=is_sandbox,
        expires_at=expires_at,
    )
    record_audit(
        actor=actor, organization=key.organization, action="inference_key.create", target=key,
        detail={"name": name, "key_prefix": prefix},
    )
    return IssuedKey(key=key, secret=secret)


@transaction.atomic
def create_management_key(
    *, actor: Actor, member: Member, name: str, scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey[ManagementKey]:
    secret, secret_hash, prefix = _new_secret(SecretKind.MANAGEMENT)
    key = ManagementKey.objects.create(
        member=member, name=name, key_prefix=prefix, secret_hash=secret_hash, scopes=scopes or [],
        expires_at=expires_at,
    )
    record_audit(
        actor=actor, organization=member.organization, action="management_key.create", target=key,
        detail={"name": name, "key_prefix": prefix, "scopes": key.scopes},
    )
    return IssuedKey(key=key, secret=secret)


@transaction.atomic
def create_service_token(*, actor: Actor, name: str) -> IssuedKey[ServiceToken]:
    secret, secret_hash, prefix = _new_secret(SecretKind.SERVICE)
    token = ServiceToken.objects.create(name=name, key_prefix=prefix, secret_hash=secret_hash)
    record_audit(actor=actor, organization=None, action="service_token.create", target=token,
                 detail={"name": name, "key_prefix": prefix})
    return IssuedKey(key=token, secret=secret)
