"""Personas, as in the stories the tests tell: alice owns Acme, bob is a plain member of
Acme, charlie owns Globex (another organization) and must never see Acme's data."""

from dataclasses import dataclass

import pytest

from portal.models import Department, Member, Organization
from tests import factories


@dataclass
class World:
    acme: Organization
    globex: Organization
    research: Department
    support: Department
    sales: Department
    alice: Member
    amir: Member
    bob: Member
    charlie: Member


@pytest.fixture
def world(db) -> World:
    acme = factories.make_organization("Acme", timezone="Asia/Shanghai", currency="CNY")
    globex = factories.make_organization("Globex", timezone="America/New_York", currency="USD")
    return World(
        acme=acme,
        globex=globex,
        research=factories.make_department(acme, "Research"),
        support=factories.make_department(acme, "Support"),
        sales=factories.make_department(globex, "Sales"),
        alice=factories.make_member(acme, "alice", role="owner"),
        amir=factories.make_member(acme, "amir", role="admin"),
        bob=factories.make_member(acme, "bob", role="member"),
        charlie=factories.make_member(globex, "charlie", role="owner"),
    )


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's deliberate slowness buys nothing in tests and costs seconds per persona.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
