import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from portal import services
from portal.models import AuditLog, Department, Group, Member, Organization
from tests import factories


def test_every_tenancy_row_has_an_integer_id_and_a_stable_uuid(world):
    for obj in (world.acme, world.research, world.alice, services.create_group(
            actor=services.SYSTEM, organization=world.acme, name="Ops")):
        assert isinstance(obj.pk, int)
        assert isinstance(obj.uuid, uuid.UUID)
        before = obj.uuid
        obj.save()
        obj.refresh_from_db()
        assert obj.uuid == before


def test_uuids_differ_between_rows(world):
    assert world.acme.uuid != world.globex.uuid
    assert world.research.uuid != world.support.uuid


def test_organization_defaults_to_shanghai_time():
    organization = Organization(name="X", slug="x")
    assert organization.timezone == "Asia/Shanghai"


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York", "UTC"])
def test_organization_accepts_iana_zones(zone):
    slug = "zoned-" + zone.lower().replace("/", "-")
    organization = services.create_organization(actor=services.SYSTEM, name="Zoned", slug=slug, timezone=zone)
    assert organization.zone.key == zone


@pytest.mark.django_db
def test_organization_rejects_a_zone_that_is_not_iana():
    with pytest.raises(ValidationError, match="timezone"):
        services.create_organization(actor=services.SYSTEM, name="Nowhere", slug="nowhere", timezone="Mars/Olympus")
    assert not Organization.objects.filter(slug="nowhere").exists()


def test_department_names_are_unique_within_an_organization_only(world):
    factories.make_department(world.globex, "Research")  # same name, other org: fine
    with pytest.raises(ValidationError):
        factories.make_department(world.acme, "Research")


def test_a_department_cannot_be_its_own_parent(world):
    with pytest.raises(ValidationError, match="ancestor"):
        services.move_department(actor=services.SYSTEM, department=world.research, parent=world.research)


def test_a_department_cannot_move_under_its_own_descendant(world):
    lab = factories.make_department(world.acme, "Lab", parent=world.research)
    bench = factories.make_department(world.acme, "Bench", parent=lab)
    with pytest.raises(ValidationError, match="ancestor"):
        services.move_department(actor=services.SYSTEM, department=world.research, parent=bench)
    world.research.refresh_from_db()
    assert world.research.parent is None


def test_a_department_can_move_to_an_unrelated_branch(world):
    lab = factories.make_department(world.acme, "Lab", parent=world.research)
    moved = services.move_department(actor=services.SYSTEM, department=lab, parent=world.support)
    assert moved.parent == world.support
    assert AuditLog.objects.filter(action="department.move", target_id=str(lab.pk)).exists()


def test_a_department_cannot_hang_under_another_organizations_department(world):
    with pytest.raises(ValidationError, match="another organization"):
        factories.make_department(world.acme, "Spy", parent=world.sales)


@pytest.mark.parametrize("discount", ["-0.1", "1.5"], ids=["negative", "above-one"])
def test_department_discount_stays_between_zero_and_one(world, discount):
    from decimal import Decimal

    with pytest.raises(ValidationError):
        factories.make_department(world.acme, "Cheap", discount=Decimal(discount))
    with pytest.raises(IntegrityError), transaction.atomic():
        Department.objects.create(organization=world.acme, name="Raw", discount=Decimal(discount))


def test_owners_and_admins_are_staff_members_are_not(world):
    assert world.alice.user.is_staff and world.amir.user.is_staff
    assert not world.bob.user.is_staff


def test_changing_a_role_updates_admin_access_and_is_audited(world):
    services.set_member_role(actor=services.Actor.for_member(world.alice), member=world.bob, role=Member.Role.ADMIN)
    world.bob.user.refresh_from_db()
    assert world.bob.user.is_staff
    services.set_member_role(actor=services.SYSTEM, member=world.bob, role=Member.Role.MEMBER)
    world.bob.user.refresh_from_db()
    assert not world.bob.user.is_staff
    log = AuditLog.objects.filter(action="member.set_role", target_id=str(world.bob.pk)).order_by("id").first()
    assert log.actor == world.alice and log.detail == {"from": "member", "to": "admin"}


def test_group_names_are_unique_within_an_organization(world):
    services.create_group(actor=services.SYSTEM, organization=world.acme, name="Ops", members=[world.bob])
    with pytest.raises(IntegrityError), transaction.atomic():
        Group.objects.create(organization=world.acme, name="Ops")
    assert list(Group.objects.get(organization=world.acme, name="Ops").members.all()) == [world.bob]
