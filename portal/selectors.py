"""Reads for tenancy."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from portal.models import Department, Member, Organization


def member_of(user: AbstractBaseUser | AnonymousUser | None) -> Member | None:
    """The member record of a logged-in user, or None (anonymous, or a platform superuser)."""
    if user is None or not user.is_authenticated:
        return None
    try:
        return user.member  # type: ignore[union-attr]
    except Member.DoesNotExist:
        return None



def department_in(organization: Organization, **lookup: Any) -> Department | None:
    """A department of `organization` (another organization's is simply not there)."""
    return Department.objects.filter(organization=organization, **lookup).first()
