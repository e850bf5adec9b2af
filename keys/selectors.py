"""Reads for credentials: finding the active credential behind a presented secret."""

import time
from datetime import timedelta

from django.core.cache import cache
from django.db.models import Q, QuerySet
from django.utils import timezone

from keys.hashing import hash_secret, hashes_match
from keys.models import InferenceKey, KeyStatus, ManagementKey, ServiceToken

LAST_USED_RESOLUTION = timedelta(minutes=1)


def _usable(credential, now) -> bool:
    return credential.status == KeyStatus.ACTIVE and (credential.expires_at is None or credential.expires_at > now)


_touched_in_process: dict[str, float] = {}


def touch_last_used(model, pk: int, *, process_local: bool = False) -> None:
    """Record use at most once a minute per key, so authentication is not a write per request.
    The cache remembers the last touch (or, for the hot service token, this process does); the
    filtered UPDATE keeps the column right whichever process gets there first."""
    marker = f"keys:touched:{model._meta.label_lower}:{pk}"
    resolution = LAST_USED_RESOLUTION.total_seconds()
    if process_local:
        if _touched_in_process.get(marker, 0.0) > time.monotonic():
            return
        _touched_in_process[marker] = time.monotonic() + resolution
    elif not cache.add(marker, 1, int(resolution)):
        return
    now = timezone.now()
    model.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION), pk=pk
    ).update(last_used_at=now)


def active_management_key(secret: str) -> ManagementKey | None:
    now = timezone.now()
    key = ManagementKey.objects.select_related("member__user", "member__organization").filter(
        secret_hash=hash_secret(secret)
    ).first()
    if key is None or not hashes_match(key.secret_hash, secret) or not _usable(key, now):
        return None
    if key.member.organization.status != "active" or not key.member.user.is_active:
        return None
    return key


# The gateway presents the same service token on every call of its hot path. Each process keeps
# the answer for a few seconds, so a revoked service token stops working within that time.
SERVICE_TOKEN_MEMO_SECONDS = 5.0
_service_token_memo: dict[str, tuple[float, ServiceToken | None]] = {}


def active_service_token(secret: str) -> ServiceToken | None:
    secret_hash = hash_secret(secret)
    remembered = _service_token_memo.get(secret_hash)
    if remembered and remembered[0] > time.monotonic():
        return remembered[1]
    token = ServiceToken.objects.filter(secret_hash=secret_hash).first()
    if token is not None and (not hashes_match(token.secret_hash, secret) or not _usable(token, timezone.now())):
        token = None
    if len(_service_token_memo) > 1000:
        _service_token_memo.clear()  # bounded: only a handful of real tokens exist
    _service_token_memo[secret_hash] = (time.monotonic() + SERVICE_TOKEN_MEMO_SECONDS, token)
    return token


def forget_service_token_memo() -> None:
    _service_token_memo.clear()
    _touched_in_process.clear()


def inference_key_for_secret(secret: str) -> InferenceKey | None:
    """The live key a secret belongs to, by its current secret or, during a rotation's grace
    period, its previous one. Deleted keys are never found."""
    secret_hash = hash_secret(secret)
    now = timezone.now()
    key = (
        InferenceKey.objects.filter(deleted_at__isnull=True)
        .filter(Q(secret_hash=secret_hash) | Q(previous_secret_hash=secret_hash, rotate_grace_until__gt=now))
        .select_related("department", "organization")
        .first()
    )
    if key is None:
        return None
    stored = key.secret_hash if key.secret_hash == secret_hash else key.previous_secret_hash
    return key if hashes_match(stored, secret) else None


def live_keys(organization) -> QuerySet[InferenceKey]:
    """An organization's inference keys that were not deleted: what the key API and the portal's
    key pages list and find (a deleted key is gone from both, its usage history stays)."""
    return (InferenceKey.objects.filter(organization=organization, deleted_at__isnull=True)
            .select_related("organization", "department"))


def key_in(organization, **lookup) -> InferenceKey | None:
    """An inference key of `organization` (another organization's is simply not there)."""
    return InferenceKey.objects.filter(organization=organization, **lookup).first()
