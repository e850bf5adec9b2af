"""Document numbers: `INV-YYYY-NNNNNN`, `CN-YYYY-NNNNNN`, one gapless sequence per kind and year
across the whole platform.

The counter row is locked and bumped inside the caller's transaction, so a document that rolls
back takes its number back with it (no gap), and two writers never get the same number. Numbers
are given in commit order of the writers holding the lock; they are unique by constraint too."""

from django.db import transaction

from billing.models import DocumentSequence

INVOICE, CREDIT_NOTE = "INV", "CN"


def next_number(kind: str, year: int) -> str:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("document numbers are taken inside the transaction that writes the document")
    DocumentSequence.objects.get_or_create(kind=kind, year=year)
    sequence = DocumentSequence.objects.select_for_update().get(kind=kind, year=year)
    sequence.last += 1
    sequence.save(update_fields=["last"])
    return f"{kind}-{year}-{sequence.last:06d}"
