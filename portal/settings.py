"""Settings, read from the environment in this one module.

Every setting has a safe local default so that a fresh checkout runs on SQLite with no
server; production and CI set DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY and KEY_PEPPER.
"""

from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-local-development-secret-key-change-me")
# The pepper keys the HMAC under which API-key secrets are stored; rotating it invalidates every key.
KEY_PEPPER = env.str("KEY_PEPPER", default="insecure-local-development-pepper")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Celery beat's schedule in the database, shown and edited in the admin (Periodic tasks).
    "django_celery_beat",
    "portal",
    "keys",
    "billing",
    "usage",
]

MIDDLEWARE = [
    "portal.middleware.ServerTimingMiddleware",
    # Streamed responses stay streamed under the ASGI server (make serve-prod).
    "portal.middleware.StreamUnderASGI",
    "django.middleware.security.SecurityMiddleware",
    # Static files (the stylesheet, Chart.js) from the application itself, under gunicorn too.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The language: set_language's cookie, then Accept-Language; PortalMemberMiddleware puts the
    # member's own setting first.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The portal's member, language and clock for a session (API.md §11).
    "portal.middleware.PortalMemberMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "django.template.context_processors.tz",
                "portal.pages.context.portal",
            ],
        },
    },
]

# SQLite is the embedded, zero-setup default; DATABASE_URL=postgres://... selects PostgreSQL.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file-backed test database, so that a Celery worker started by a test can open it too.
    DATABASES["default"]["TEST"] = {"NAME": str(BASE_DIR / ".test-db.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis when configured (shared by every worker), process-local memory otherwise.
CACHE_URL = env.str("CACHE_URL", default="")
CACHES = {
    "default": env.cache_url_config(CACHE_URL)
    if CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "portal"}
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en"
# The portal's four languages (API.md §11). Catalogs are compiled and committed (locale/), so
# running the portal needs no gettext.
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文"), ("ko", "한국어"), ("ar", "العربية")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Everything is stored in UTC; each organization carries its own IANA zone for its days.
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Chart.js as npm installed it (`make install`), at /static/vendor/chartjs/.
STATICFILES_DIRS = [("vendor/chartjs", BASE_DIR / "node_modules" / "chart.js" / "dist")]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed, compressed names after `collectstatic` in production (far-future caching); the
    # plain storage where nothing was collected (the demo, the tests).
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_COLLECTED", default=False)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Without collectstatic (the demo, the tests' live server), WhiteNoise serves from the finders.
WHITENOISE_USE_FINDERS = not env.bool("STATIC_COLLECTED", default=False)

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
# The session remembers the organization a member of several chose (portal/pages/door.py).
SESSION_ORGANIZATION_KEY = "portal_organization_id"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.api.authentication.BearerKeyAuthentication",
        "portal.api.authentication.BasicKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Authentication is required everywhere; authorization is RamPermission (portal/api/views.py).
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "portal.api.errors.exception_handler",
    # Every API body is JSON (API.md): no form or multipart parsing, where `null` and lists would
    # arrive as strings. The portal's forms are Django views and never reach DRF's parsers.
    "DEFAULT_PARSER_CLASSES": ["portal.api.parsers.JSONParser"],
    # No `?format=` renderer override: an endpoint that offers a format says so in its own
    # parameters (Venice's CSV), so the parameter is validated there and never answers a body
    # whose content type lies about it.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_SCHEMA_CLASS": "portal.api.schema.RamAutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "LLM usage and billing portal API",
    "DESCRIPTION": "Five vendors' usage and billing dialects over one query engine; every endpoint is "
    "guarded by a RAM action (see GET /api/v1/ram/actions).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the installed sidecar package: the docs page works with no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# The platform as the seller on every invoice; billing.invoicing snapshots these when it makes one.
PLATFORM_LEGAL_NAME = env.str("PLATFORM_LEGAL_NAME", default="LLM Portal Platform Ltd.")
PLATFORM_ADDRESS = env.str("PLATFORM_ADDRESS", default="1 Example Road, Shanghai, China")
PLATFORM_TAX_ID = env.str("PLATFORM_TAX_ID", default="PLATFORM-TAX-000")
PLATFORM_BILLING_EMAIL = env.str("PLATFORM_BILLING_EMAIL", default="billing@platform.example")

# Celery: with no broker configured, tasks run eagerly in-process (the no-server default).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
if CELERY_BROKER_URL.startswith("filesystem://"):
    # Kombu's file transport: a real cross-process broker with no server (used by the test
    # suite's worker test when no Redis is configured).
    _broker_dir = Path(env.str("CELERY_FILESYSTEM_DIR", default=str(BASE_DIR / ".celery-broker")))
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_EAGER_PROPAGATES = True
# Usage is folded into the rollups after the ingest transaction commits, by a worker, from the
# queue of unfolded batches (usage/folding.py). Without a broker there is no worker: each ingest
# transaction folds its own batch before it commits (and the test suite does so everywhere).
USAGE_FOLD_IN_TRANSACTION = env.bool("USAGE_FOLD_IN_TRANSACTION", default=CELERY_TASK_ALWAYS_EAGER)
# With a broker: how far (seconds) an organization's rollups may lag its committed events before
# a writer folds them itself before answering (backpressure, usage/folding.py).
USAGE_FOLD_LAG_LIMIT = env.float("USAGE_FOLD_LAG_LIMIT", default=2.0)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default="") or None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
# Beat keeps the schedule in the database (django-celery-beat): the entries below are written
# into it when beat starts, and operators see, change or pause them in the admin.
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BEAT_SCHEDULE = {
    # The sweep behind the fold enqueued on each ingest commit (a lost enqueue, a killed worker):
    # freshness is promised within 5 s (bench/RESULTS.md).
    "fold-usage-queue": {
        "task": "usage.tasks.fold_usage",
        "schedule": 2.0,
    },
    "expire-subscriptions": {
        "task": "billing.tasks.expire_subscriptions",
        "schedule": 3600.0,
    },
    # 02:00 UTC: every organization's month has ended on its own clock by the night after it ends.
    "nightly-invoices": {
        "task": "billing.tasks.run_nightly_billing",
        "schedule": crontab(hour=2, minute=0),
    },
    "budget-job-every-5-minutes": {
        "task": "billing.tasks.run_budget_job",
        "schedule": 300.0,
    },
    # After the invoices: every balance and issued invoice checked against raw events.
    "nightly-billing-reconciliation": {
        "task": "billing.tasks.reconcile_billing",
        "schedule": crontab(hour=3, minute=0),
    },
}

# Budget alerts and other mail: the console in the demo, SMTP in production (EMAIL_URL, e.g.
# smtp://user:password@mail.example.com:587/?tls=True).
_email = env.email_url("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST, EMAIL_PORT = _email.get("EMAIL_HOST", ""), _email.get("EMAIL_PORT", 25)
EMAIL_HOST_USER, EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_USER", ""), _email.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@portal.localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=[])

# Webhooks (API.md §10). Deliveries to hosts that resolve to loopback, private, link-local or
# other non-public addresses are refused unless this is true (local demos and tests set it).
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env.bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", default=False)
# The first retry waits this long; each further one twice as long (capped at an hour).
WEBHOOK_RETRY_BASE_SECONDS = env.int("WEBHOOK_RETRY_BASE_SECONDS", default=30)
# Fernet keys (comma-separated; the first encrypts, all decrypt) for secrets stored encrypted,
# such as webhook signing secrets. Unset: a key derived from SECRET_KEY, so the demo needs no setup.
FIELD_ENCRYPTION_KEY = env.list("FIELD_ENCRYPTION_KEY", default=[])

# The gateway (API.md §12). A model with no max_output_tokens of its own reserves this many output
# tokens against hard budgets when a call names no max_tokens.
GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS = env.int("GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS", default=4096)
# The store every gateway worker shares for rate limits, budget reservations and the metering
# hand-over: Redis (CACHE_URL's when that is Redis). Empty: each process keeps its own (one
# process only: the development server, the tests).
GATEWAY_REDIS_URL = env.str("GATEWAY_REDIS_URL", default=CACHE_URL if CACHE_URL.startswith("redis") else "")
