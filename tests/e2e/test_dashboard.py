"""The dashboard in a real browser: its charts are drawn, in every language."""

from urllib.parse import urlparse

from playwright.sync_api import expect

from tests.e2e.conftest import ALICE, screenshot, sign_in, switch_language

# For every chart: portal.js marked it drawn, and its pixels differ from those of an empty canvas
# of the same size (a chart library that failed, or drew nothing, leaves the canvas blank).
CHARTS_STATE = """() => [...document.querySelectorAll("canvas[data-chart]")].map(canvas => {
    const blank = document.createElement("canvas");
    blank.width = canvas.width;
    blank.height = canvas.height;
    return {chart: canvas.dataset.chart, drawn: canvas.dataset.drawn === "true",
            size: [canvas.width, canvas.height], painted: canvas.toDataURL() !== blank.toDataURL()};
})"""


def assert_charts_drawn(page) -> list[dict]:
    expect(page.locator("canvas[data-chart]").first).to_be_attached()
    page.wait_for_function(
        "() => [...document.querySelectorAll('canvas[data-chart]')].every(c => c.dataset.drawn === 'true')"
    )
    charts = page.evaluate(CHARTS_STATE)
    assert charts and all(c["drawn"] and c["painted"] and 0 not in c["size"] for c in charts), charts
    return charts


def test_alice_signs_in_and_sees_the_dashboard_with_its_charts_drawn(page):
    page.goto("/")
    assert "/login/" in page.url  # the dashboard is for members only
    sign_in(page, ALICE, "/")
    assert urlparse(page.url).path == "/"
    expect(page.get_by_test_id("organization-name")).to_have_text("Acme")
    expect(page.locator("nav.sidebar a[href='/'][aria-current=page]")).to_have_count(1)
    charts = assert_charts_drawn(page)
    assert len(charts) >= 2, f"the dashboard draws daily activity and the model distribution at least: {charts}"


def test_the_dashboard_in_each_language_is_drawn_and_photographed(page):
    sign_in(page, ALICE, "/")
    html = page.locator("html")
    for code, direction in (("en", "ltr"), ("zh-hans", "ltr"), ("ko", "ltr"), ("ar", "rtl")):
        if code != "en":
            switch_language(page, code)
        expect(html).to_have_attribute("lang", code)
        expect(html).to_have_attribute("dir", direction)
        assert_charts_drawn(page)
        screenshot(page, f"dashboard-{code}")
