"""The Celery application: configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
if not app.conf.broker_url:
    # No broker configured: tasks run eagerly, so the in-memory transport is never really used.
    app.conf.broker_url = "memory://"
app.autodiscover_tasks()
