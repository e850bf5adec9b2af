"""gunicorn's configuration for `make serve-prod` (read by path: gunicorn -c portal/gunicorn_conf.py).

Sized for the gateway's ingestion (`POST /api/v1/usage/events`, 1,000 events a request), the
heaviest thing the server does: 2 × cores + 1 sync worker processes. A batch spends about two
thirds of its time waiting on PostgreSQL (the insert and its fold-queue rows, then COMMIT's WAL flush;
bench/ingest_http.py prints the split), so with more workers than cores one worker's Python
(decoding, look-ups, rating) runs while another's transaction is in the database, and four
concurrent gateway writers each find a free worker (cores + 1 = 3 would queue the fourth).
Processes rather than threads: that Python is CPU-bound and would share one GIL in a gthread
worker.

The workers are uvicorn's (uvicorn-worker) serving portal.asgi: the gateway (`/v1/`) is an ASGI
app that holds many slow streams per process on one event loop, which a sync worker could not
(one stream would hold a whole process). Django's own views run under the same workers through
its ASGI handler, each sync view in the worker's one thread, so ingestion and the pages keep the
one-request-at-a-time-per-process shape that the sizing above is about. GUNICORN_WORKER_CLASS=sync
(or gthread) goes back to WSGI (portal.wsgi), without the gateway. The gateway's metering is
stored by a process beside gunicorn (`manage.py consume_metering`, started by `make serve-prod`),
not by these workers: portal/gateway/metering.py says why. WEB_CONCURRENCY,
GUNICORN_WORKER_CLASS and GUNICORN_THREADS override these. The portal's
page requests are short and database-bound too. Static files are served by WhiteNoise inside the
application (after `collectstatic`), so no separate web server is needed to try the production
setup."""

import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "uvicorn_worker.UvicornWorker")
threads = int(os.environ.get("GUNICORN_THREADS", 1))
timeout = 60
graceful_timeout = 30
# Keep-alive behind a proxy (uvicorn and gthread workers; sync workers close after each response);
# the access log on stdout, in a line a log shipper can parse (gunicorn's, for WSGI workers).
keepalive = 5
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
# The application for the worker class: ASGI (gateway and portal) for uvicorn's, WSGI otherwise.
wsgi_app = "portal.asgi:application" if "uvicorn" in worker_class.lower() else "portal.wsgi:application"
