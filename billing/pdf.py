"""Invoice PDFs (API.md §10): a real PDF holding the invoice number, both parties, the period,
every line, the totals and the credit notes, as extractable text, in the organization's language.

Drawn with fpdf2, which is pure Python, so a fresh machine needs no system library (WeasyPrint
would need pango). The fonts come from PyPI packages, never from the network at run time:
WenQuanYi Micro Hei (Apache-2.0; Latin, 汉字 and Hangul in one TrueType collection, 2.3 MB wheel)
for every language, and Noto Sans Arabic (OFL-1.1) for Arabic; text is shaped by HarfBuzz
(uharfbuzz), and Arabic invoices are laid out right to left. fpdf2 embeds only the glyphs used, so
an invoice is tens of kilobytes; drawing one takes about a second, mostly reading the font.

Amounts are rounded only by billing.money (half-up to 2 places), as on the API."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any

import fontpkg_noto_sans_arabic
import paperang_p2_fonts_cjk
from fpdf import FPDF, FontFace
from fpdf.enums import TableBordersLayout, XPos, YPos

from billing.models import CreditNote, Invoice, InvoiceLine
from billing.money import ZERO, round_display_amount

__all__ = ["LABELS", "invoice_pdf_filename", "render_invoice_pdf"]

CJK_FONT = Path(paperang_p2_fonts_cjk.__file__).resolve().parent / "fonts" / "wqy-microhei.ttc"
ARABIC_FONT = fontpkg_noto_sans_arabic.ROOT / "files" / "NotoSansArabic[wdth,wght].ttf"
RIGHT_TO_LEFT = frozenset({"ar"})
DASH = "—"

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "invoice": "Invoice", "invoice_no": "Invoice number", "issue_date": "Issue date", "paid_date": "Paid on",
        "period": "Billing period", "currency": "Currency", "status": "Status", "seller": "From",
        "buyer": "Bill to", "address": "Address", "tax_id": "Tax ID", "email": "Email",
        "kind": "Type", "description": "Description", "model": "Model", "team": "Team", "quantity": "Quantity",
        "unit": "Unit", "unit_price": "Unit price", "amount": "Amount", "subtotal": "Subtotal", "tax": "Tax",
        "credits_applied": "Credits applied", "total": "Amount due", "credit_notes": "Credit notes",
        "credit_note_no": "Credit note", "date": "Date", "reason": "Reason", "no_lines": "No charges this period",
        "page": "Page {page} of {pages}", "draft_notice": "Draft: not yet issued",
        "status.draft": "Draft", "status.issued": "Issued", "status.paid": "Paid", "status.void": "Void",
        "kind.plan_fee": "Plan fee", "kind.usage": "Usage", "kind.credit": "Credit", "kind.adjustment": "Adjustment",
    },
    "zh-hans": {
        "invoice": "发票", "invoice_no": "发票号码", "issue_date": "开票日期", "paid_date": "付款日期",
        "period": "账单周期", "currency": "币种", "status": "状态", "seller": "销售方", "buyer": "购买方",
        "address": "地址", "tax_id": "纳税人识别号", "email": "邮箱", "kind": "类型",
        "description": "项目", "model": "模型", "team": "团队", "quantity": "数量", "unit": "单位",
        "unit_price": "单价", "amount": "金额", "subtotal": "小计", "tax": "税额", "credits_applied": "抵扣额度",
        "total": "应付金额", "credit_notes": "红字发票（贷项通知单）", "credit_note_no": "贷项通知单号",
        "date": "日期", "reason": "原因", "no_lines": "本期无费用", "page": "第 {page} 页，共 {pages} 页",
        "draft_notice": "草稿：尚未开具",
        "status.draft": "草稿", "status.issued": "已开具", "status.paid": "已付款", "status.void": "已作废",
        "kind.plan_fee": "套餐费", "kind.usage": "用量", "kind.credit": "抵扣", "kind.adjustment": "调整",
    },
    "ko": {
        "invoice": "청구서", "invoice_no": "청구서 번호", "issue_date": "발행일", "paid_date": "결제일",
        "period": "청구 기간", "currency": "통화", "status": "상태", "seller": "공급자", "buyer": "공급받는 자",
        "address": "주소", "tax_id": "사업자등록번호", "email": "이메일", "kind": "유형",
        "description": "항목", "model": "모델", "team": "팀", "quantity": "수량", "unit": "단위",
        "unit_price": "단가", "amount": "금액", "subtotal": "소계", "tax": "세액", "credits_applied": "적용된 크레딧",
        "total": "청구 금액", "credit_notes": "크레딧 노트", "credit_note_no": "크레딧 노트 번호", "date": "날짜",
        "reason": "사유", "no_lines": "이번 기간에는 요금이 없습니다", "page": "{page} / {pages} 페이지",
        "draft_notice": "초안: 아직 발행되지 않음",
        "status.draft": "초안", "status.issued": "발행됨", "status.paid": "결제 완료", "status.void": "무효",
        "kind.plan_fee": "요금제 요금", "kind.usage": "사용량", "kind.credit": "크레딧", "kind.adjustment": "조정",
    },
    "ar": {
        "invoice": "فاتورة", "invoice_no": "رقم الفاتورة", "issue_date": "تاريخ الإصدار", "paid_date": "تاريخ الدفع",
        "period": "فترة الفوترة", "currency": "العملة", "status": "الحالة", "seller": "البائع", "buyer": "المشتري",
        "address": "العنوان", "tax_id": "الرقم الضريبي", "email": "البريد الإلكتروني",
        "kind": "النوع", "description": "البند", "model": "النموذج", "team": "الفريق", "quantity": "الكمية",
        "unit": "الوحدة", "unit_price": "سعر الوحدة", "amount": "المبلغ", "subtotal": "المجموع الفرعي",
        "tax": "الضريبة", "credits_applied": "الأرصدة المطبقة", "total": "المبلغ المستحق",
        "credit_notes": "إشعارات دائنة", "credit_note_no": "رقم الإشعار الدائن", "date": "التاريخ",
        # No page total: see InvoiceDocument.footer.
        "reason": "السبب", "no_lines": "لا توجد رسوم في هذه الفترة", "page": "صفحة {page}",
        "draft_notice": "مسودة: لم تصدر بعد",
        "status.draft": "مسودة", "status.issued": "صادرة", "status.paid": "مدفوعة", "status.void": "ملغاة",
        "kind.plan_fee": "رسوم الباقة", "kind.usage": "الاستخدام", "kind.credit": "رصيد", "kind.adjustment": "تسوية",
    },
}

# The parties' snapshot fields printed under their own label, in this order; any other field
# the snapshot holds follows as "key: value".
PARTY_FIELDS = ("address", "tax_id", "email")
PARTY_NAMES = ("legal_name", "name")

GREY = (235, 235, 235)
TEXT_GREY = (90, 90, 90)


def money(amount: Decimal) -> str:
    return f"{round_display_amount(amount):,.2f}"


def quantity(value: Decimal) -> str:
    """Quantities keep their digits, without trailing zeros or an exponent."""
    return f"{value.normalize():,f}"


def unit_price(value: Decimal | None) -> str:
    """Unit prices: at least 2 places, and every further digit they have (per-token prices)."""
    if value is None:
        return DASH
    return money(value) if value == round_display_amount(value) else quantity(value)


def percent(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f}%"


def invoice_pdf_filename(invoice: Invoice) -> str:
    return f"{invoice.invoice_no}.pdf"


class InvoiceDocument(FPDF):
    def __init__(self, labels: Mapping[str, str], rtl: bool) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.labels, self.rtl = labels, rtl
        self.set_margins(15, 15, 15)
        self.set_auto_page_break(auto=True, margin=18)
        self.add_font("cjk", fname=CJK_FONT, collection_font_number=0)
        # A variable font whose default instance is the regular weight: drawn as it is, since
        # asking fpdf2 for an instance (variations=) costs seconds per document.
        self.add_font("arabic", fname=ARABIC_FONT)
        # One main font per script; each covers the other's glyphs (names and addresses may be in
        # any script, whatever the organization's language).
        self.main_font = "arabic" if rtl else "cjk"
        self.set_fallback_fonts(["cjk"] if rtl else ["arabic"], exact_match=False)
        # HarfBuzz shapes every document, not only Arabic ones: a buyer's Arabic name on an
        # English invoice needs its joined letter forms too (it costs no measurable time).
        self.shaping = {"direction": "rtl", "script": "arab", "language": "ar"} if rtl else {}
        self.set_text_shaping(use_shaping_engine=True, **self.shaping)
        self.alias_nb_pages("{pages}")

    @property
    def start(self) -> str:
        return "R" if self.rtl else "L"

    @property
    def end(self) -> str:
        return "L" if self.rtl else "R"

    def ltr(self, text: str) -> str:
        """Numbers, dates and codes kept left to right inside Arabic text (a Unicode isolate):
        otherwise the bidi algorithm shows -50.00 as 50.00-."""
        return f"\u2066{text}\u2069" if self.rtl else text

    def ordered(self, items: Sequence[Any]) -> list[Any]:
        """Columns as read: right to left in Arabic."""
        return list(reversed(items)) if self.rtl else list(items)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(self.main_font, size=8)
        self.set_text_color(*TEXT_GREY)
        # Unshaped where the script allows: in shaped text fpdf2 keeps the width of the page-total
        # placeholder, which leaves a gap inside the line (Arabic shows no total for that reason).
        self.set_text_shaping(use_shaping_engine=self.rtl)
        self.cell(0, 5, self.labels["page"].format(page=self.page_no(), pages="{pages}"), align="C")
        self.set_text_shaping(use_shaping_engine=True, **self.shaping)
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, size: float = 11) -> None:
        self.set_font(self.main_font, size=size)
        self.cell(0, size * 0.6, text, align=self.start, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def table_of(self, rows: Iterable[Sequence[str]], *, widths: Sequence[float], aligns: Sequence[str],
                 headings: bool = True, borders: TableBordersLayout = TableBordersLayout.HORIZONTAL_LINES,
                 size: float = 8.5, width: float | None = None, at_end: bool = False) -> None:
        """A table across the page, or `width` wide at the start of the line (the end if `at_end`)."""
        self.set_font(self.main_font, size=size)
        side = (self.end if at_end else self.start) if width else "CENTER"
        with self.table(col_widths=self.ordered(widths), text_align=self.ordered(aligns), width=width,
                        align=side, borders_layout=borders,
                        first_row_as_headings=headings, line_height=size * 0.55, padding=(1.2, 1.5),
                        headings_style=FontFace(emphasis="", fill_color=GREY)) as table:
            for values in rows:
                row = table.row()
                for value in self.ordered(values):
                    row.cell(value)
        self.ln(4)


def render_invoice_pdf(invoice: Invoice) -> bytes:
    """The invoice as a PDF, in its organization's language (English when it has no labels)."""
    organization = invoice.organization
    language = organization.language if organization.language in LABELS else "en"
    labels = LABELS[language]
    pdf = InvoiceDocument(labels, rtl=language in RIGHT_TO_LEFT)
    pdf.set_title(f"{labels['invoice']} {invoice.invoice_no}")
    pdf.set_author(str(invoice.seller.get("name") or invoice.seller.get("legal_name") or ""))
    pdf.set_subject(f"{invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d}")
    pdf.set_lang(language)
    pdf.set_creator("llm-portal")
    pdf.add_page()

    pdf.set_font(pdf.main_font, size=20)
    pdf.cell(0, 10, labels["invoice"], align=pdf.start, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(pdf.main_font, size=12)
    pdf.cell(0, 7, pdf.ltr(invoice.invoice_no), align=pdf.start, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if invoice.status == Invoice.Status.DRAFT:
        pdf.set_text_color(180, 0, 0)
        pdf.cell(0, 6, labels["draft_notice"], align=pdf.start, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0, 0, 0)
    pdf.ln(3)

    pdf.table_of(_facts(invoice, labels, pdf.ltr), widths=(1, 2), aligns=(pdf.start, pdf.start), headings=False,
                 borders=TableBordersLayout.NONE, size=9.5, width=110)
    pdf.table_of([(labels["seller"], labels["buyer"]),
                  (_party(invoice.seller, labels), _party(invoice.buyer, labels))],
                 widths=(1, 1), aligns=(pdf.start, pdf.start), size=9.5)

    lines = list(invoice.lines.select_related("model", "department").order_by("id"))
    pdf.table_of([_line_headings(labels), *(_line_row(line, labels, pdf.ltr) for line in lines)]
                 if lines else [(labels["description"],), (labels["no_lines"],)],
                 widths=(17, 45, 22, 20, 22, 14, 18, 22) if lines else (1,),
                 aligns=(pdf.start, pdf.start, pdf.start, pdf.start, "R", "C", "R", "R") if lines else (pdf.start,))

    currency = invoice.currency
    totals = [
        (labels["subtotal"], pdf.ltr(f"{money(invoice.subtotal)} {currency}")),
        (f"{labels['tax']} ({pdf.ltr(percent(invoice.tax_rate))})", pdf.ltr(f"{money(invoice.tax)} {currency}")),
        # Shown as what it takes off the total.
        (labels["credits_applied"], pdf.ltr(f"{money(-invoice.credits_applied or ZERO)} {currency}")),
        (labels["total"], pdf.ltr(f"{money(invoice.amount)} {currency}")),
    ]
    pdf.table_of(totals, widths=(3, 2), aligns=(pdf.start, "R"), headings=False, size=10, width=100, at_end=True)

    notes = list(invoice.credit_notes.order_by("id"))
    if notes:
        pdf.heading(labels["credit_notes"])
        pdf.table_of([(labels["credit_note_no"], labels["date"], labels["reason"], labels["amount"]),
                      *(_credit_note_row(note, organization.zone, pdf.ltr) for note in notes)],
                     widths=(35, 25, 90, 30), aligns=(pdf.start, pdf.start, pdf.start, "R"))
    return bytes(pdf.output())


def _facts(invoice: Invoice, labels: Mapping[str, str], ltr: Callable[[str], str]) -> list[tuple[str, str]]:
    zone = invoice.organization.zone
    facts = [
        (labels["invoice_no"], ltr(invoice.invoice_no)),
        (labels["issue_date"], ltr(f"{invoice.issued_at.astimezone(zone):%Y-%m-%d}") if invoice.issued_at else DASH),
        (labels["period"], ltr(f"{invoice.period_start:%Y-%m-%d} – {invoice.period_end:%Y-%m-%d}")),
        (labels["currency"], ltr(invoice.currency)),
        (labels["status"], labels.get(f"status.{invoice.status}", invoice.status)),
    ]
    if invoice.paid_at:
        facts.append((labels["paid_date"], ltr(f"{invoice.paid_at.astimezone(zone):%Y-%m-%d}")))
    return facts


def _party(snapshot: Mapping[str, Any], labels: Mapping[str, str]) -> str:
    name = next((str(snapshot[key]) for key in PARTY_NAMES if snapshot.get(key)), DASH)
    lines = [name]
    for key in PARTY_FIELDS:
        if snapshot.get(key):
            value = str(snapshot[key])
            lines.append(value if key == "address" else f"{labels[key]}: {value}")
    shown = set(PARTY_FIELDS) | set(PARTY_NAMES)
    lines += [f"{key}: {value}" for key, value in snapshot.items()
              if key not in shown and value not in (None, "", [], {})]
    return "\n".join(lines)


def _line_headings(labels: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(labels[key] for key in ("kind", "description", "model", "team", "quantity", "unit", "unit_price",
                                         "amount"))


def _line_row(line: InvoiceLine, labels: Mapping[str, str], ltr: Callable[[str], str]) -> tuple[str, ...]:
    return (
        labels.get(f"kind.{line.kind}", line.kind),
        line.description,
        ltr(line.model.code) if line.model_id else DASH,
        line.department.name if line.department_id else DASH,
        ltr(quantity(line.quantity)),
        line.unit or DASH,
        ltr(unit_price(line.unit_price)),
        ltr(money(line.amount)),
    )


def _credit_note_row(note: CreditNote, zone: tzinfo, ltr: Callable[[str], str]) -> tuple[str, ...]:
    return (ltr(note.credit_note_no), ltr(f"{note.created_at.astimezone(zone):%Y-%m-%d}"), note.reason,
            ltr(f"{money(note.amount)} {note.currency}"))
