"""Writes for credentials. Each returns the secret exactly once, beside the stored row."""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from billing.models import Model as CatalogModel
from keys.encryption import UPSTREAM_KEYS, key_ring
from keys.hashing import SecretKind, display_prefix, generate_secret, hash_secret
from keys.models import InferenceKey, KeyStatus, ManagementKey, ServiceToken, Upstream
from keys.selectors import forget_service_token_memo, inference_key_for_secret, touch_last_used
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


# --- lifecycle --------------------------------------------------------------------------------

ROTATE_GRACE_DEFAULT = timedelta(hours=24)
ROTATE_GRACE_MAX_HOURS = 168


def _forget_now_and_after_commit(*secret_hashes: str | None) -> None:
    # The gateway's verify cache must not outlive a change. Clearing now stops the cached answer;
    # clearing again at commit drops one a concurrent verify may have cached from the old row.
    forget_verification(*secret_hashes)
    transaction.on_commit(lambda: forget_verification(*secret_hashes))


def _after_commit_forget(key: InferenceKey) -> None:
    _forget_now_and_after_commit(key.secret_hash, key.previous_secret_hash)


def _audit(actor: Actor, key: InferenceKey, action: str, detail: dict | None = None) -> None:
    record_audit(actor=actor, organization=key.organization, action=f"inference_key.{action}", target=key,
                 detail={"key_prefix": key.key_prefix, **(detail or {})})


@transaction.atomic
def update_inference_key(*, actor: Actor, key: InferenceKey, **changes) -> InferenceKey:
    allowed = {"name", "models_allowed", "allowed_ips", "rpm_limit", "tpm_limit"}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    for name, value in changes.items():
        setattr(key, name, value)
    key.save(update_fields=list(changes) or None)
    _audit(actor, key, "update", {"fields": sorted(changes)})
    _after_commit_forget(key)
    return key


@transaction.atomic
def rotate_inference_key(*, actor: Actor, key: InferenceKey, grace: timedelta = ROTATE_GRACE_DEFAULT) -> IssuedKey:
    """Issue a new secret; the current one keeps working until `rotate_grace_until`."""
    secret, secret_hash, prefix = _new_secret(SecretKind.INFERENCE)
    old_hash, old_prefix = key.secret_hash, key.key_prefix
    key.previous_secret_hash = old_hash if grace > timedelta(0) else None
    key.previous_key_prefix = old_prefix
    key.rotate_grace_until = timezone.now() + grace if grace > timedelta(0) else None
    key.secret_hash, key.key_prefix = secret_hash, prefix
    key.save(update_fields=["previous_secret_hash", "previous_key_prefix", "rotate_grace_until", "secret_hash",
                            "key_prefix"])
    _audit(actor, key, "rotate", {"old_key_prefix": old_prefix, "grace_seconds": int(grace.total_seconds())})
    _forget_now_and_after_commit(old_hash, secret_hash)
    return IssuedKey(key=key, secret=secret)


def _set_status(actor: Actor, key: InferenceKey, status: str, action: str) -> InferenceKey:
    key.status = status
    key.save(update_fields=["status"])
    _audit(actor, key, action)
    _after_commit_forget(key)
    return key


@transaction.atomic
def disable_inference_key(*, actor: Actor, key: InferenceKey) -> InferenceKey:
    return _set_status(actor, key, KeyStatus.DISABLED, "disable")


@transaction.atomic
def enable_inference_key(*, actor: Actor, key: InferenceKey) -> InferenceKey:
    if key.status == KeyStatus.REVOKED:
        raise ValueError("a revoked key cannot be enabled")
    return _set_status(actor, key, KeyStatus.ACTIVE, "enable")


@transaction.atomic
def delete_inference_key(*, actor: Actor, key: InferenceKey) -> None:
    """Irreversible: the key stops working and disappears from the API; its usage stays."""
    key.status = KeyStatus.REVOKED
    key.deleted_at = timezone.now()
    key.save(update_fields=["status", "deleted_at"])
    _audit(actor, key, "delete")
    _after_commit_forget(key)


@transaction.atomic
def revoke_management_key(*, actor: Actor, key: ManagementKey) -> ManagementKey:
    key.status = KeyStatus.REVOKED
    key.save(update_fields=["status"])
    record_audit(actor=actor, organization=key.member.organization, action="management_key.revoke", target=key,
                 detail={"key_prefix": key.key_prefix})
    return key


# --- verification (the gateway's hot path) -----------------------------------------------------

VERIFY_CACHE_SECONDS = 60
VERIFY_NEGATIVE_CACHE_SECONDS = 10
# In front of the shared cache, each process remembers answers for half a second: the hot path
# then needs no network round trip, and a change still reaches every process within a second.
VERIFY_PROCESS_MEMO_SECONDS = 0.5
VERIFY_PROCESS_MEMO_SIZE = 50_000
_INVALID = {"valid": False}
_verify_memo: dict[str, tuple[float, dict]] = {}


def _verify_cache_key(secret_hash: str) -> str:
    return f"keys:verify:{secret_hash}"


def forget_verification(*secret_hashes: str | None) -> None:
    for secret_hash in secret_hashes:
        _verify_memo.pop(secret_hash or "", None)
    cache.delete_many([_verify_cache_key(h) for h in secret_hashes if h])


def forget_verification_memo() -> None:
    _verify_memo.clear()


def forget_process_memos() -> None:
    """Drop everything this process remembers about credentials (tests; after a revocation)."""
    forget_verification_memo()
    forget_service_token_memo()


def _remember(secret_hash: str, answer: dict) -> dict:
    if len(_verify_memo) >= VERIFY_PROCESS_MEMO_SIZE:
        _verify_memo.clear()
    _verify_memo[secret_hash] = (time.monotonic() + VERIFY_PROCESS_MEMO_SECONDS, answer)
    return answer


def remembered_verification(secret_hash: str) -> dict | None:
    """This process's answer for a key, if it is fresh: no I/O at all, so the gateway's event loop
    may ask it on every call (a miss goes to `verify_inference_key` in a thread)."""
    remembered = _verify_memo.get(secret_hash)
    if remembered and remembered[0] > time.monotonic():
        return remembered[1]
    return None


def verify_inference_key(secret: str, *, budget_exhausted: Callable[[InferenceKey], bool]) -> dict:
    """What the gateway needs to know about a presented key, from cache when possible.

    `budget_exhausted` answers for the key: budgets are billing's, a floor above keys, so the
    caller (the API, on top of both) says how to ask.

    Cached answers never outlive the key's expiry or the end of a rotation's grace period, and
    every change to a key deletes them, so a disabled or rotated-out key stops verifying at once."""
    secret_hash = hash_secret(secret)
    remembered = _verify_memo.get(secret_hash)
    if remembered and remembered[0] > time.monotonic():
        return remembered[1]
    cache_key = _verify_cache_key(secret_hash)
    cached = cache.get(cache_key)
    if cached is not None:
        return _remember(secret_hash, cached)
    key = inference_key_for_secret(secret)
    now = timezone.now()
    if key is None or key.status != KeyStatus.ACTIVE or (key.expires_at and key.expires_at <= now):
        cache.set(cache_key, _INVALID, VERIFY_NEGATIVE_CACHE_SECONDS)
        return _remember(secret_hash, _INVALID)
    answer = {
        "valid": True,
        "key_id": str(key.uuid),
        "org_id": str(key.organization.uuid),
        "team_id": str(key.department.uuid),
        "status": key.status,
        "models_allowed": key.models_allowed,
        "allowed_ips": key.allowed_ips,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "budget_exhausted": budget_exhausted(key),
    }
    # Expire the cached answer no later than the key itself (or its old secret) stops working.
    horizons = [VERIFY_CACHE_SECONDS]
    if key.expires_at:
        horizons.append((key.expires_at - now).total_seconds())
    if key.previous_secret_hash == secret_hash and key.rotate_grace_until:
        horizons.append((key.rotate_grace_until - now).total_seconds())
    timeout = min(horizons)
    touch_last_used(InferenceKey, key.pk)
    if timeout >= 1:
        cache.set(cache_key, answer, int(timeout))
        return _remember(secret_hash, answer)
    return answer


# --- upstreams (the providers behind the gateway) ------------------------------------------------

class UpstreamRefused(ValueError):
    """An upstream the rules refuse; `field` is the request field to name in the 422."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@transaction.atomic
def create_upstream(*, actor: Actor, name: str, base_url: str, api_key: str, model_codes: list[str],
                    timeout_seconds: int = 60, max_retries: int = 2) -> Upstream:
    """Record a provider; its API key is stored encrypted and never returned. Each model code must
    be in the catalog and served by no other upstream (the gateway routes a model to one place)."""
    codes = list(dict.fromkeys(model_codes))
    known = set(CatalogModel.objects.filter(code__in=codes).values_list("code", flat=True))
    unknown = [code for code in codes if code not in known]
    if unknown:
        raise UpstreamRefused("models", f"unknown model code(s): {', '.join(unknown)}")
    taken = {code: upstream.name for upstream in Upstream.objects.select_for_update()
             for code in upstream.model_codes if code in codes}
    if taken:
        raise UpstreamRefused("models", "already served by another upstream: "
                              + ", ".join(f"{code} ({owner})" for code, owner in sorted(taken.items())))
    if Upstream.objects.filter(name=name).exists():
        raise UpstreamRefused("name", "an upstream of that name exists")
    upstream = Upstream.objects.create(
        name=name, base_url=base_url.rstrip("/"), model_codes=codes, timeout_seconds=timeout_seconds,
        max_retries=max_retries, api_key_encrypted=key_ring(UPSTREAM_KEYS).encrypt(api_key.encode()).decode())
    record_audit(actor=actor, organization=None, action="upstream.create", target=upstream,
                 detail={"name": name, "base_url": upstream.base_url, "models": codes})
    return upstream


@transaction.atomic
def set_upstream_api_key(*, actor: Actor, upstream: Upstream, api_key: str) -> Upstream:
    """Replace the provider key (the admin's write-only field)."""
    upstream.api_key_encrypted = key_ring(UPSTREAM_KEYS).encrypt(api_key.encode()).decode()
    upstream.save(update_fields=["api_key_encrypted"])
    record_audit(actor=actor, organization=None, action="upstream.set_api_key", target=upstream,
                 detail={"name": upstream.name})
    return upstream


@transaction.atomic
def delete_upstream(*, actor: Actor, upstream: Upstream) -> None:
    record_audit(actor=actor, organization=None, action="upstream.delete", target=upstream,
                 detail={"name": upstream.name, "models": upstream.model_codes})
    upstream.delete()
