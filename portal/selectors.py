"""Reads for tenancy."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from portal.models import Member


def member_of(user: AbstractBaseUser | AnonymousUser | None) -> Member | None:
    """The member record of a logged-in user, or None (anonymous, or a platform superuser)."""
    if user is None or not user.is_authenticated:
        return None
    try:
        return user.member  # type: ignore[union-attr]
    except Member.DoesNotExist:
        return None

