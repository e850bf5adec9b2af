"""Tenant isolation as a browser sees it: charlie (Globex's owner) never meets Acme's data."""

from tests.e2e.conftest import CHARLIE, sign_in

PAGES = ("/", "/usage/", "/keys/", "/billing/", "/access/", "/audit/")


def acme_on_the_page(page, seeded) -> list[str]:
    """Acme's words in what the page shows (case-insensitive: "acme" is in its logins and emails
    too), and Acme's object ids anywhere in its HTML (links, data attributes, scripts)."""
    text, html = page.inner_text("body").casefold(), page.content()
    return ([name for name in seeded.acme_names if name.casefold() in text]
            + [uuid for uuid in seeded.acme_uuids if uuid in html])


def test_charlie_sees_only_globex_in_the_audit_log(page, seeded):
    sign_in(page, CHARLIE, "/audit/")
    assert page.get_by_test_id("organization-name").inner_text() == "Globex"
    log = page.get_by_test_id("audit-table").inner_text()
    assert any(name in log for name in seeded.globex_names[1:]), log  # Globex's own departments are there
    assert acme_on_the_page(page, seeded) == []


def test_charlie_never_sees_acme_on_any_page(page, seeded):
    sign_in(page, CHARLIE, "/audit/")
    problems = {}
    for path in PAGES:
        response = page.goto(path)
        if response.status != 200:
            problems[path] = f"answered {response.status}"
        elif page.get_by_test_id("organization-name").inner_text() != "Globex":
            problems[path] = "does not show Globex as the organization"
        elif leaks := acme_on_the_page(page, seeded):
            problems[path] = f"shows Acme's {leaks}"
    assert problems == {}, problems


def test_acmes_objects_are_not_found_for_charlie(page, seeded):
    sign_in(page, CHARLIE, "/audit/")
    for path in (f"/keys/{seeded.acme_key_uuid}/", f"/billing/invoices/{seeded.acme_invoice_uuid}/"):
        response = page.goto(path)
        assert response.status == 404, (path, response.status)
        assert acme_on_the_page(page, seeded) == [], path
    # The PDF is fetched with the browser's cookies but not opened: a leaked PDF would be a download.
    pdf = page.request.get(f"/billing/invoices/{seeded.acme_invoice_uuid}/pdf")
    assert pdf.status == 404 and not pdf.body().startswith(b"%PDF"), pdf.status
