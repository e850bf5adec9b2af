"""Signing in, the audit log, and the language picker, in a real browser."""

import re

from playwright.sync_api import expect

from tests.e2e.conftest import ALICE, CONSULTANT, ERIN, sign_in, switch_language


def test_an_anonymous_visitor_signs_in_and_lands_where_they_were_going(page):
    page.goto("/audit/")
    assert re.search(r"/login/\?next=/audit/$", page.url), page.url
    page.fill("#id_username", ALICE.username)
    page.fill("#id_password", "not-the-password")
    with page.expect_navigation():
        page.click("form[action='/login/'] button[type=submit]")
    expect(page.get_by_role("alert")).to_be_visible()

    page.fill("#id_password", ALICE.password)
    with page.expect_navigation():
        page.click("form[action='/login/'] button[type=submit]")
    assert page.url.endswith("/audit/")
    expect(page.get_by_test_id("organization-name")).to_have_text("Acme")
    # The seeding's own changes are in Acme's log, by name.
    expect(page.get_by_test_id("audit-table")).to_contain_text("Research app 1")


def test_alice_switches_to_arabic_and_gets_a_mirrored_page_then_to_chinese(page):
    sign_in(page, ALICE, "/audit/")
    html = page.locator("html")
    expect(html).to_have_attribute("lang", "en")
    expect(html).to_have_attribute("dir", "ltr")
    sidebar, main = page.locator("nav.sidebar"), page.locator("main")
    assert sidebar.bounding_box()["x"] < main.bounding_box()["x"]

    switch_language(page, "ar")
    assert page.url.endswith("/audit/")  # set_language returns to the page it was chosen on
    expect(html).to_have_attribute("lang", "ar")
    expect(html).to_have_attribute("dir", "rtl")
    # A layout that really mirrors: the navigation moves to the right of the content.
    assert sidebar.bounding_box()["x"] > main.bounding_box()["x"]
    expect(page.locator("select#language-picker")).to_have_value("ar")

    switch_language(page, "zh-hans")
    expect(html).to_have_attribute("lang", "zh-hans")
    expect(html).to_have_attribute("dir", "ltr")
    assert sidebar.bounding_box()["x"] < main.bounding_box()["x"]

    # The choice is alice's setting, not only this browser's: it holds after signing in again.
    page.context.clear_cookies()
    sign_in(page, ALICE, "/audit/")
    expect(html).to_have_attribute("lang", "zh-hans")


def test_a_member_whose_policies_do_not_allow_a_page_gets_the_403_page_naming_the_action(page):
    sign_in(page, ERIN, "/usage/")  # UsageReadOnlyAccess: usage, but no audit log
    response = page.goto("/audit/")
    assert response.status == 403
    expect(page.get_by_test_id("denied-action")).to_have_text("ram:ListAuditLog")
    # Nor is the audit log offered in the navigation.
    expect(page.locator("nav.sidebar a[href='/audit/']")).to_have_count(0)


def test_a_member_of_two_organizations_switches_between_them(page):
    sign_in(page, CONSULTANT, "/audit/")
    switcher = page.locator("select#organization-switcher")
    expect(switcher.locator("option")).to_have_text(["Acme", "Globex"])
    expect(page.get_by_test_id("audit-table")).to_contain_text("Research")  # Acme's log

    with page.expect_navigation():
        switcher.select_option(label="Globex")  # submits itself (portal.js)
    page.goto("/audit/")
    expect(switcher.locator("option:checked")).to_have_text("Globex")
    log = page.get_by_test_id("audit-table")
    expect(log).to_contain_text("Engineering")
    expect(log).not_to_contain_text("Research")
