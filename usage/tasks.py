"""Celery tasks for usage: thin wrappers that call the folder."""

from celery import shared_task

from usage import folding

# A task folds for at most this long; whatever is left, the next enqueue or the beat sweep takes.
FOLD_TASK_SECONDS = 60.0


@shared_task(name="usage.tasks.fold_usage")
def fold_usage() -> int:
    """Fold the queued batches (usage/folding.py): enqueued on commit of every ingest transaction,
    and by beat every few seconds as a sweep. Returns the events folded (0 when another folder
    was at it)."""
    return folding.fold_until_empty(seconds=FOLD_TASK_SECONDS)
