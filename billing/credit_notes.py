"""Credit notes (API.md §10): the only correction of an issued invoice.

`issue_credit_note` writes the note, its gapless `CN-YYYY-NNNNNN` number and the `credit_note`
ledger entry that raises the balance, in one transaction with an audit row. The invoice row is
locked while its notes are summed, so two concurrent notes can never add up to more than the
invoice's amount: the second waits for the first to commit and then sees it."""

from decimal import Decimal

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from billing.ledger import append_entry
from billing.models import BillingAccount, CreditNote, Invoice, LedgerEntry
from billing.money import ZERO, round_display_amount
from billing.numbering import CREDIT_NOTE, next_number
from portal.services import Actor, record_audit

__all__ = ["CREDITABLE", "CreditNoteRefused", "credited_amount", "issue_credit_note"]

# Drafts are corrected by editing them; a void invoice has nothing left to correct.
CREDITABLE = frozenset({Invoice.Status.ISSUED, Invoice.Status.PAID})


class CreditNoteRefused(ValueError):
    """A credit note that may not be issued; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def credited_amount(invoice: Invoice) -> Decimal:
    """What the invoice's credit notes add up to so far."""
    return invoice.credit_notes.aggregate(total=Sum("amount"))["total"] or ZERO


@transaction.atomic
def issue_credit_note(*, actor: Actor, invoice: Invoice, amount: Decimal, reason: str) -> CreditNote:
    if amount <= ZERO:
        raise CreditNoteRefused("amount", "must be greater than 0")
    if round_display_amount(amount) != amount:
        raise CreditNoteRefused("amount", "has more than 2 decimal places")
    # Locked until commit: a concurrent note on the same invoice waits here, then sums ours too.
    locked = Invoice.objects.select_for_update().select_related("organization").get(pk=invoice.pk)
    if locked.status not in CREDITABLE:
        raise CreditNoteRefused("invoice", f"invoice {locked.invoice_no} is {locked.status}; only issued or paid "
                                           "invoices take credit notes")
    account_currency = BillingAccount.objects.values_list("currency", flat=True).get(organization=locked.organization)
    if account_currency != locked.currency:
        # The ledger keeps one currency per account; a note in another could not be booked.
        raise CreditNoteRefused("invoice", f"invoice {locked.invoice_no} is in {locked.currency}, the account "
                                           f"in {account_currency}")
    already = credited_amount(locked)
    left = locked.amount - already
    if amount > left:
        raise CreditNoteRefused(
            "amount", f"{amount} exceeds what is left to credit on {locked.invoice_no}: "
                      f"{round_display_amount(max(left, ZERO))} {locked.currency} of "
                      f"{round_display_amount(locked.amount)} (credited so far {round_display_amount(already)})")
    organization = locked.organization
    year = timezone.now().astimezone(organization.zone).year
    note = CreditNote.objects.create(invoice=locked, credit_note_no=next_number(CREDIT_NOTE, year), amount=amount,
                                     currency=locked.currency, reason=reason)
    append_entry(organization=organization, kind=LedgerEntry.Kind.CREDIT_NOTE, amount=amount, invoice=locked,
                 credit_note=note, note=f"Credit note {note.credit_note_no} on {locked.invoice_no}"[:300])
    record_audit(actor=actor, organization=organization, action="credit_note.issue", target=note,
                 detail={"credit_note_no": note.credit_note_no, "invoice_no": locked.invoice_no,
                         "amount": str(amount), "currency": note.currency, "reason": reason})
    return note
