"""gunicorn's configuration for `make serve-prod` (read by path: gunicorn -c portal/gunicorn_conf.py).

Sync workers, one per core plus one: the portal's requests are short and database-bound. The
static files are served by WhiteNoise inside the application (after `collectstatic`), so no
separate web server is needed to try the production setup."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
worker_class = "sync"
timeout = 60
graceful_timeout = 30
# Keep-alive behind a proxy; the access log on stdout, in a line a log shipper can parse.
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
wsgi_app = "portal.wsgi:application"
