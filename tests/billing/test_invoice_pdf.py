"""Invoice PDFs: a real PDF whose text an extractor reads back (the number, both parties, the
period, every line, the totals), in the organization's language, with 汉字 drawn from an
embedded font rather than left as empty boxes."""

import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from fontTools.ttLib import TTFont
from pypdf import PdfReader

from billing.models import Invoice
from billing.pdf import LABELS, render_invoice_pdf
from tests import factories
from tests.api_helpers import client_for
from tests.billing import invoice_factories as invoices

BUYER = {"name": "Acme Robotics Co., Ltd.", "address": "88 Century Avenue, Shanghai", "tax_id": "91310000ACME0001",
         "email": "ap@acme.example"}


def pdf_text(content: bytes) -> str:
    reader = PdfReader(io.BytesIO(content))
    return "\n".join(page.extract_text() for page in reader.pages)


def embedded_fonts(content: bytes) -> dict[str, TTFont]:
    """The font subsets the PDF embeds, by base name (without the subset tag)."""
    fonts = {}
    for page in PdfReader(io.BytesIO(content)).pages:
        for reference in page["/Resources"]["/Font"].values():
            font = reference.get_object()
            descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"]
            data = descriptor["/FontFile2"].get_object().get_data()
            fonts[str(font["/BaseFont"]).split("+", 1)[-1]] = TTFont(io.BytesIO(data))
    return fonts


def drawn_characters(content: bytes) -> set[str]:
    """Characters some embedded font maps to a glyph with an outline: a character the fonts lack
    is drawn as .notdef (an empty box) and is not among these."""
    drawn = set()
    for font in embedded_fonts(content).values():
        glyphs = font["glyf"]
        drawn |= {chr(code) for code, name in font.getBestCmap().items() if glyphs[name].numberOfContours != 0}
    return drawn


@pytest.fixture
def march(world) -> Invoice:
    qwen = factories.make_model("qwen-plus")
    return invoices.make_invoice(world.acme, [
        invoices.plan_fee("1000.00", "Plan fee: Enterprise"),
        invoices.usage(qwen, world.research, "234.56499999"),
        invoices.credit("50.00", "Prepaid credit grant"),
    ], tax_rate="0.06", buyer=BUYER, issued_at=datetime(2026, 4, 1, 1, tzinfo=UTC))


def fetch_pdf(member, invoice: Invoice) -> bytes:
    response = client_for(member).get(f"/api/v1/billing/invoices/{invoice.uuid}/pdf")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert f'filename="{invoice.invoice_no}.pdf"' in response["Content-Disposition"]
    return response.content


def test_the_pdf_holds_the_number_both_parties_the_period_every_line_and_the_totals(world, march):
    content = fetch_pdf(world.alice, march)
    assert content.startswith(b"%PDF-")
    text = pdf_text(content)
    for expected in (
        march.invoice_no, "LLM Platform Ltd.", "91330100MA2TEST01X", BUYER["name"], BUYER["address"],
        BUYER["tax_id"], "2026-03-01 – 2026-03-31", "2026-04-01",
        "Plan fee: Enterprise", "qwen-plus · Research", "Prepaid credit grant", "Research", "1,500,000",
        "1,000.00", "234.56", "-50.00",  # the lines, 2 places, half-up
        "1,234.56 CNY", "Tax (6%)", "74.07 CNY", "1,258.63 CNY",  # subtotal, tax, amount due
        "Invoice", "From", "Bill to", "Subtotal", "Amount due", "Issued",
    ):
        assert expected in text, expected
    assert march.amount == Decimal("1258.63")


def test_a_chinese_organizations_invoice_speaks_chinese(world, march):
    world.acme.language = "zh-hans"
    world.acme.save(update_fields=["language"])
    content = fetch_pdf(world.alice, march)
    text = pdf_text(content)
    labels = ("发票", "发票号码", "账单周期", "销售方", "购买方", "纳税人识别号", "小计", "税额", "应付金额", "套餐费",
              "用量", "已开具")
    for label in labels:
        assert label in text, label
    assert march.invoice_no in text and "1,258.63 CNY" in text
    assert "Amount due" not in text and "Bill to" not in text
    # Every 汉字 has an outline in the embedded font: none is drawn as an empty box.
    assert set("".join(labels)) <= drawn_characters(content)


def test_a_korean_organizations_invoice_speaks_korean(world, march):
    world.acme.language = "ko"
    world.acme.save(update_fields=["language"])
    content = render_invoice_pdf(march)
    text = pdf_text(content)
    for label in ("청구서", "공급자", "소계", "청구 금액"):
        assert label in text, label
        assert set(label.replace(" ", "")) <= drawn_characters(content), label
    assert march.invoice_no in text and "1,258.63 CNY" in text


def test_an_arabic_organizations_invoice_is_shaped_right_to_left(world, march):
    world.acme.language = "ar"
    world.acme.save(update_fields=["language"])
    content = render_invoice_pdf(march)
    # Numbers sit in left-to-right isolates (U+2066 … U+2069) inside the Arabic lines.
    text = pdf_text(content).replace("\u2066", "").replace("\u2069", "")
    # (The Arabic labels themselves come back from an extractor as shaped glyph runs, not as
    # the words: only the left-to-right parts can be compared as text.)
    assert march.invoice_no in text and "1,258.63 CNY" in text and "-50.00 CNY" in text and BUYER["name"] in text
    # The labels are drawn with the Arabic font: its shaped (joined) letter forms, with outlines.
    arabic = embedded_fonts(content)["NotoSansArabic"]
    outlined = [name for name in arabic.getGlyphOrder() if arabic["glyf"][name].numberOfContours != 0]
    assert len(outlined) > 40


def test_every_language_has_every_label():
    for language, labels in LABELS.items():
        assert labels.keys() == LABELS["en"].keys(), language


def test_a_draft_says_it_is_not_issued_and_a_long_invoice_runs_onto_more_pages(world):
    qwen = factories.make_model("qwen-plus")
    teams = [factories.make_department(world.acme, f"Team {n:02d}") for n in range(60)]
    draft = invoices.make_invoice(world.acme, [invoices.usage(qwen, team, "1.005") for team in teams],
                                  status=Invoice.Status.DRAFT, period_start=date(2026, 2, 1))
    content = render_invoice_pdf(draft)
    reader = PdfReader(io.BytesIO(content))
    text = pdf_text(content)
    assert len(reader.pages) >= 2
    assert "Draft: not yet issued" in text and f"Page 2 of {len(reader.pages)}" in text
    assert all(f"Team {n:02d}" in text for n in range(60))
    assert "1.01" in text  # 1.005 rounds half-up
    assert "2026-02-01 – 2026-02-28" in text


def test_the_pdf_embeds_only_the_glyphs_it_uses(world, march):
    # The font collection is 5 MB; a subset keeps an invoice small enough to mail.
    world.acme.language = "zh-hans"
    world.acme.save(update_fields=["language"])
    assert len(render_invoice_pdf(march)) < 150_000


def test_the_pdf_lists_the_credit_notes_issued_on_the_invoice(world, march):
    from billing.credit_notes import issue_credit_note
    from portal.services import SYSTEM

    note = issue_credit_note(actor=SYSTEM, invoice=march, amount=Decimal("8.63"), reason="Outage on 3 March")
    text = pdf_text(render_invoice_pdf(march))
    assert "Credit notes" in text and note.credit_note_no in text and "Outage on 3 March" in text
    assert "8.63 CNY" in text
    assert "1,258.63 CNY" in text  # the invoice's own total is unchanged by its credit notes


def test_names_in_any_script_are_drawn_whatever_the_language(world):
    # An English invoice to a buyer whose snapshot is in Chinese and Arabic.
    invoice = invoices.make_invoice(world.acme, [invoices.plan_fee("10.00")],
                                    buyer={"name": "شركة أكمي", "address": "北京市朝阳区建国路 88 号"})
    content = render_invoice_pdf(invoice)
    text = pdf_text(content)
    assert "北京市朝阳区建国路 88 号" in text and "Bill to" in text
    assert set("北京市朝阳区建国路") <= drawn_characters(content)
    # The Arabic name falls back to the Arabic font, shaped: the five letters of "شركة أكمي"
    # in their joined forms, each with an outline.
    arabic = embedded_fonts(content)["NotoSansArabic"]
    assert sum(arabic["glyf"][name].numberOfContours != 0 for name in arabic.getGlyphOrder()) >= 7
