from typing import Any

from django.core.management.base import BaseCommand

from usage import folding


class Command(BaseCommand):
    help = ("Fold the queued batches of usage into every rollup level now, until the queue is empty "
            "(what the Celery task usage.tasks.fold_usage does after each ingest).")

    def handle(self, *args: Any, **options: Any) -> None:
        before = folding.oldest_queued()
        folded = folding.fold_until_empty()
        left = folding.oldest_queued()
        self.stdout.write(f"{folded} events folded; oldest batch was queued at {before or 'never'}; "
                          + (f"still queued since {left} (another folder is at it)." if left else "queue empty."))
