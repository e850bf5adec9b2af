"""The portal pages' door (API.md §11): login, the RAM decision of the API answered as pages,
languages, the organization switcher, the viewer's clock."""

import pytest
from django.conf import settings

from portal.services import SYSTEM, record_audit

pytestmark = pytest.mark.django_db


def test_anonymous_visitor_is_sent_to_login(client):
    response = client.get("/audit/?action=key")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/audit/%3Faction%3Dkey"


def test_login_posts_username_and_password_and_lands_on_next(client, world):
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="csrfmiddlewaretoken"' in page.content
    response = client.post("/login/", {"username": "alice", "password": "pass-for-tests", "next": "/audit/"})
    assert response.status_code == 302 and response["Location"] == "/audit/"
    assert client.get("/audit/").status_code == 200


def test_wrong_password_stays_on_login_with_an_error(client, world):
    response = client.post("/login/", {"username": "alice", "password": "nope"})
    assert response.status_code == 200 and b'role="alert"' in response.content


def test_a_denied_page_is_403_naming_the_action(client, ram_world):
    client.force_login(ram_world.bob.user)  # UsageReadOnlyAccess: no audit log
    response = client.get("/audit/")
    assert response.status_code == 403
    assert b"ram:ListAuditLog" in response.content
    assert b'data-testid="denied-action"' in response.content


def test_audit_page_lists_only_its_organizations_entries_newest_first(client, world):
    record_audit(actor=SYSTEM, organization=world.acme, action="budget.create", target=world.research)
    record_audit(actor=SYSTEM, organization=world.acme, action="budget.update", target=world.research)
    record_audit(actor=SYSTEM, organization=world.globex, action="budget.create", target=world.sales)
    client.force_login(world.alice.user)
    body = client.get("/audit/").content.decode()
    assert body.index("budget.update") < body.index("budget.create")
    assert "Sales" not in body and "Research" in body
    client.force_login(world.charlie.user)
    body = client.get("/audit/").content.decode()
    assert "Research" not in body and "Sales" in body


def test_audit_page_walks_older_entries_by_keyset(client, world):
    for n in range(53):
        record_audit(actor=SYSTEM, organization=world.acme, action=f"thing.{n:02d}", target=world.research)
    client.force_login(world.alice.user)
    first = client.get("/audit/").content.decode()
    assert "thing.52" in first and "thing.02" not in first
    older = first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&")
    second = client.get("/audit/" + older).content.decode()
    assert "thing.02" in second and "thing.00" in second and "thing.52" not in second


@pytest.mark.parametrize(("language", "direction"), [("ar", "rtl"), ("zh-hans", "ltr"), ("ko", "ltr"), ("en", "ltr")])
def test_set_language_changes_lang_and_direction_and_is_saved_on_the_member(client, world, language, direction):
    client.force_login(world.alice.user)
    response = client.post("/i18n/setlang/", {"language": language, "next": "/audit/"})
    assert response.status_code == 302
    page = client.get("/audit/").content.decode()
    assert f'<html lang="{language}" dir="{direction}">' in page
    world.alice.refresh_from_db()
    assert world.alice.language == language


def test_the_members_setting_wins_over_accept_language(client, world):
    world.alice.language = "ko"
    world.alice.save()
    client.force_login(world.alice.user)
    page = client.get("/audit/", headers={"accept-language": "zh-Hans,zh;q=0.9"}).content.decode()
    assert '<html lang="ko"' in page


def test_accept_language_decides_when_the_member_set_nothing(client, world):
    client.force_login(world.alice.user)
    page = client.get("/audit/", headers={"accept-language": "ar"}).content.decode()
    assert '<html lang="ar" dir="rtl">' in page


def test_a_member_of_two_organizations_switches_between_them(client, world):
    from portal.models import Member

    both = Member.objects.create(user=world.alice.user, organization=world.globex, role="owner")
    record_audit(actor=SYSTEM, organization=world.globex, action="globex.only", target=world.sales)
    record_audit(actor=SYSTEM, organization=world.acme, action="acme.only", target=world.research)
    client.force_login(world.alice.user)
    page = client.get("/audit/").content.decode()
    assert "acme.only" in page and "globex.only" not in page
    assert 'name="organization"' in page and str(world.globex.uuid) in page
    client.post("/switch-organization/", {"organization": str(world.globex.uuid)})
    assert client.session[settings.SESSION_ORGANIZATION_KEY] == both.organization_id
    page = client.get("/audit/").content.decode()
    assert "globex.only" in page and "acme.only" not in page


def test_switching_to_an_organization_one_is_not_a_member_of_is_refused(client, world):
    client.force_login(world.alice.user)
    response = client.post("/switch-organization/", {"organization": str(world.globex.uuid)})
    assert response.status_code == 403
    assert settings.SESSION_ORGANIZATION_KEY not in client.session


def test_times_are_in_the_organizations_zone_until_the_viewer_switches(client, world):
    client.force_login(world.alice.user)
    assert "Asia/Shanghai" in client.get("/audit/").content.decode()
    client.cookies["viewer_tz"] = "Europe/Berlin"
    client.post("/time-zone/", {"zone": "viewer", "next": "/audit/"})
    assert "Europe/Berlin" in client.get("/audit/").content.decode()
    client.cookies["viewer_tz"] = "Not/AZone"
    assert "Asia/Shanghai" in client.get("/audit/").content.decode()


def test_a_user_of_no_organization_is_told_so(client, db):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("loner", password="x"))
    response = client.get("/audit/")
    assert response.status_code == 403 and b"not a member" in response.content


def test_static_assets_are_served_by_the_application(client):
    for path in ("/static/portal/portal.css", "/static/vendor/chartjs/chart.umd.min.js"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert b"".join(response.streaming_content if response.streaming else [response.content])



def test_the_api_answers_in_english_whatever_the_browser_prefers(client, world):
    client.force_login(world.alice.user)
    response = client.post("/api/v1/ram/policies", {}, content_type="application/json",
                           headers={"accept-language": "zh-hans"})
    assert response.status_code == 422
    assert "This field is required." in response.content.decode()
