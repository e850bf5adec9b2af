"""Browser tests (issue 12): Debian's Chromium, driven by Playwright for Python, against pytest-django's
live server with the demo's world seeded into it.

- The browser is /usr/bin/chromium (apt's `chromium`; `.ci/run` installs it when missing) through
  `executable_path`: Playwright never downloads one. A machine without it FAILS these tests, with
  the command that installs it: a skipped browser test is a browser test CI never runs.
- Each test gets a freshly seeded world (the demo's Acme and Globex, 7 days of usage, grants,
  budgets, last month's invoices: about a second) in the live server's transactional database,
  which pytest-django empties again after the test.
- Personas are the demo's logins: alice = acme_owner (AdministratorAccess), bob = acme_member
  (ReadOnlyAccess), charlie = globex_owner, the consultant reads in both organizations; plus
  erin = acme_analyst (UsageReadOnlyAccess only), added here: someone the audit log refuses.
- Screenshots go to test-artifacts/e2e/ at the repository root (gitignored); the run's summary
  lists them, and a failing test leaves a screenshot of its page in test-artifacts/e2e/failures/.
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from portal.demo import DEMO_PASSWORD

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"
# Playwright's CLI must never fetch a browser of its own on a machine that runs these tests.
os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@dataclass(frozen=True)
class Persona:
    username: str
    password: str = DEMO_PASSWORD


ALICE = Persona("acme_owner")
BOB = Persona("acme_member")
CHARLIE = Persona("globex_owner")
ERIN = Persona("acme_analyst")
CONSULTANT = Persona("consultant")  # ReadOnlyAccess in both Acme and Globex (portal.demo)


@dataclass
class Seeded:
    """What the tests look for in the seeded world."""

    acme_names: list[str]  # Acme's own words: its name, departments, keys, logins
    acme_uuids: list[str]  # Acme's object ids, which must not leak into another tenant's pages either
    acme_key_uuid: str
    acme_invoice_uuid: str
    globex_names: list[str]


# --- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"The browser tests need Debian's Chromium at {CHROMIUM} and it is not there. Install it with "
            "`apt-get install -y chromium` (.ci/run does so when it is missing), or point E2E_CHROMIUM at "
            "another Chromium binary. Playwright's own browser downloads are not used.",
            pytrace=False,
        )
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM calls
    # from a thread with a running loop; the tests and the seeding touch the database synchronously,
    # one call at a time, so the refusal protects nothing here. Only while the browser is up.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # Chromium's sandbox refuses to start as root (containers, CI).
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


_REPORTS = pytest.StashKey[dict]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture
def page(request, browser, live_server, seeded):
    """A fresh browser profile (no cookies) in English, at the live server."""
    context = browser.new_context(
        base_url=live_server.url, locale="en-US", accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    # Generous for navigations (a cold PostgreSQL on CI), short for an element that is not there.
    context.set_default_navigation_timeout(30_000)
    context.set_default_timeout(8_000)
    page = context.new_page()
    yield page
    call = request.node.stash.get(_REPORTS, {}).get("call")
    if call is not None and call.failed:
        shot = ARTIFACTS / "failures" / (re.sub(r"[^\w.-]+", "_", request.node.name) + ".png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the failing page: {shot}")
        except PlaywrightError as error:  # a crashed page: the test's own failure says more
            print(f"\nno screenshot of the failing page: {error}")
    context.close()


def sign_in(page, persona: Persona, path: str = "/") -> None:
    """Through the login form, as a person would; lands on `path`."""
    page.goto(f"/login/?next={path}")
    page.fill("#id_username", persona.username)
    page.fill("#id_password", persona.password)
    with page.expect_navigation():
        page.click("form[action='/login/'] button[type=submit]")
    assert "/login/" not in page.url, f"{persona.username} could not sign in: {page.inner_text('main')}"


def switch_language(page, code: str) -> None:
    """The language picker in the top bar submits itself on change (portal.js)."""
    with page.expect_navigation():
        page.select_option("select#language-picker", code)


_WRITTEN: list[Path] = []


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    _WRITTEN.append(path)
    print(f"screenshot: {path}")
    return path


def pytest_terminal_summary(terminalreporter):
    if _WRITTEN:
        terminalreporter.section("browser test screenshots")
        for path in _WRITTEN:
            terminalreporter.write_line(str(path))


# --- the seeded world ---------------------------------------------------------------------------


@pytest.fixture
def seeded(transactional_db) -> Seeded:
    """The demo's world as `make demo` builds it, smaller: 7 days of usage instead of 30."""
    from billing.models import Invoice
    from keys.models import InferenceKey
    from portal import demo, services
    from portal.models import Department, Member, Organization, Policy
    from portal.ram import services as ram
    from portal.ram.system_policies import USAGE_READ_ONLY_ACCESS, sync_system_policies

    # A transactional test empties every table afterwards, the system policies its migrations wrote
    # included; put them back (idempotent) as the migrations that write them do.
    sync_system_policies(Policy)

    # The subscriptions start on the first of the month `usage_days` back (portal.demo.seed_world):
    # 32 days always reach into last month, so the nightly job has a month to invoice.
    demo.seed_world(usage_days=32)
    demo.generate_usage(7)
    demo.seed_grants()
    demo.seed_budgets()
    demo.seed_invoices()

    acme = Organization.objects.get(slug="acme")
    globex = Organization.objects.get(slug="globex")
    erin = services.create_member(actor=services.SYSTEM, organization=acme, username=ERIN.username,
                                  password=ERIN.password, role=Member.Role.MEMBER, email="analyst@acme.example")
    ram.attach_policy(actor=services.SYSTEM, policy=ram.system_policy(USAGE_READ_ONLY_ACCESS), member=erin)

    # The consultant is a member of both: his name is Globex's to show as well.
    acme_only_logins = (Member.objects.filter(organization=acme)
                        .exclude(user__in=Member.objects.filter(organization=globex).values("user"))
                        .values_list("user__username", flat=True))
    acme_keys = list(InferenceKey.objects.filter(organization=acme))
    acme_departments = list(Department.objects.filter(organization=acme))
    acme_invoices = list(Invoice.objects.filter(organization=acme))
    assert acme_keys and acme_invoices, "the demo seeding made no Acme key or invoice"
    return Seeded(
        acme_names=[acme.name, *(d.name for d in acme_departments), *(k.name for k in acme_keys), *acme_only_logins],
        acme_uuids=[str(acme.uuid), *(str(d.uuid) for d in acme_departments), *(str(k.uuid) for k in acme_keys),
                    *(str(i.uuid) for i in acme_invoices)],
        acme_key_uuid=str(acme_keys[0].uuid),
        acme_invoice_uuid=str(acme_invoices[0].uuid),
        globex_names=[globex.name, *Department.objects.filter(organization=globex).values_list("name", flat=True)],
    )
