"""API keys in a real browser: a secret is shown once, rotation and disabling go through a
confirmation, and a member without keys:CreateKey is refused the creation page by name."""

import re

from playwright.sync_api import expect

from tests.e2e.conftest import ALICE, BOB, sign_in


def accept_confirmations(page) -> list[str]:
    """Accept every confirm() the page raises (forms with data-confirm) and keep what they asked."""
    asked: list[str] = []

    def accept(dialog):
        asked.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    return asked


def submit(page, test_id: str):
    """Click a form's button and wait for the page it leads to; returns that page's response."""
    with page.expect_navigation() as navigation:
        page.get_by_test_id(test_id).click()
    return navigation.value


def shown_secret(page) -> str:
    """The secret as the page shows it: the text of the element, or its value if it is a field."""
    return page.get_by_test_id("new-secret").evaluate("el => (el.value ?? el.textContent).trim()")


def test_alice_creates_a_key_sees_its_secret_once_rotates_and_disables_it(page):
    from keys.hashing import hash_secret
    from keys.models import InferenceKey, KeyStatus

    sign_in(page, ALICE, "/keys/new/")
    name = "Checkout assistant (e2e)"
    page.fill("form [name=name]", name)
    department = page.locator("form select[name*=department], form select[name*=team]").first
    choices = [value for value in department.locator("option").evaluate_all("os => os.map(o => o.value)") if value]
    department.select_option(choices[0])
    shown = submit(page, "create-key")

    key = InferenceKey.objects.get(organization__slug="acme", name=name)
    secret = shown_secret(page)
    assert secret.startswith(key.key_prefix) and secret.startswith("sk-"), secret
    assert hash_secret(secret) == key.secret_hash  # the real secret of the new key, in full

    # Once: neither the key's page nor a reload of the page that showed it shows it again (a page
    # answering the POST itself is not reloaded: that would post the form a second time).
    if shown.request.method == "GET":
        page.reload()
        assert secret not in page.content()
    page.goto(f"/keys/{key.uuid}/")
    expect(page.get_by_test_id("key-status")).to_be_visible()
    expect(page.get_by_test_id("new-secret")).to_have_count(0)
    assert secret not in page.content()

    asked = accept_confirmations(page)
    submit(page, "rotate-key")
    assert len(asked) == 1, "rotating asks for a confirmation first"
    rotated = shown_secret(page)
    key.refresh_from_db()
    assert rotated != secret and hash_secret(rotated) == key.secret_hash
    assert key.previous_secret_hash == hash_secret(secret)  # the old secret works during the grace period

    page.goto(f"/keys/{key.uuid}/")
    assert rotated not in page.content()
    submit(page, "disable-key")
    expect(page.get_by_test_id("key-status")).to_contain_text(re.compile("disabled", re.IGNORECASE))
    key.refresh_from_db()
    assert key.status == KeyStatus.DISABLED

    # Who changed which key, from where: the audit log names the key and alice's address.
    page.goto("/audit/")
    log = page.get_by_test_id("audit-table")
    expect(log).to_contain_text(name)
    expect(log).to_contain_text("127.0.0.1")


def test_bob_is_refused_the_key_creation_page_with_the_action_named(page):
    from keys.models import InferenceKey

    keys_before = InferenceKey.objects.count()
    sign_in(page, BOB, "/keys/")  # ReadOnlyAccess: he may list keys, not create them
    response = page.goto("/keys/new/")
    assert response.status == 403
    expect(page.get_by_test_id("denied-action")).to_have_text("keys:CreateKey")
    assert InferenceKey.objects.count() == keys_before
