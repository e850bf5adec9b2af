"""What a customer takes away: an invoice as a PDF, the usage on screen as CSV."""

import csv
import io
from pathlib import Path

from tests.e2e.conftest import ALICE, sign_in


def download(page, test_id: str) -> tuple[str, bytes]:
    with page.expect_download() as started:
        page.get_by_test_id(test_id).first.click()
    done = started.value
    assert done.failure() is None, done.failure()
    return done.suggested_filename, Path(done.path()).read_bytes()


def test_alice_downloads_an_invoice_pdf(page):
    sign_in(page, ALICE, "/billing/")
    name, body = download(page, "invoice-pdf")
    assert body.startswith(b"%PDF"), body[:40]
    assert name.lower().endswith(".pdf"), name


def test_alice_exports_the_usage_on_screen_as_csv(page):
    sign_in(page, ALICE, "/usage/")
    name, body = download(page, "export-csv")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert name.lower().endswith(".csv"), name
    header, data = rows[0], rows[1:]
    # A header names its columns (in words); the demo's last week of usage fills rows under it.
    assert len(header) >= 2 and all(cell.strip() for cell in header), header
    assert any(character.isalpha() for cell in header for character in cell), header
    assert data and all(len(row) == len(header) for row in data), rows[:3]
