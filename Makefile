# The two commands of the README: `make demo` and `make test`. Everything else is a helper.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# Django 6 needs Python 3.12+: take the first such interpreter on PATH, else one under pyenv.
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3; do \
	  if $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then command -v $$p; exit 0; fi; done; \
	  ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -V | tail -n 1)
HOST ?= 127.0.0.1
PORT ?= 8000
DAYS ?= 30

.PHONY: install demo serve test lint bench worker beat clean

$(BIN)/.installed: pyproject.toml package.json package-lock.json
	@test -n "$(PYTHON)" || { echo "Python 3.12 or newer is required (Django 6)." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# Chart.js for the portal's charts, from the npm registry at the locked version (served by WhiteNoise).
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(BIN)/.installed

# The demo lets webhooks reach receivers on this machine (API.md §10); production keeps the default.
demo: export WEBHOOK_ALLOW_PRIVATE_NETWORKS ?= true
demo: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo --days $(DAYS)
	@echo "Portal on http://$(HOST):$(PORT)/  (Django admin at /admin/)"
	@echo "Gateway on http://$(HOST):$(PORT)/v1 (an inference key from /keys/new/), forwarding to the stand-in provider on 127.0.0.1:8001"
	@# The demo's upstream (seed_demo): a deterministic OpenAI-compatible stand-in, stopped with the portal;
	@# and, when the gateway hands its metering over through Redis (CACHE_URL or GATEWAY_REDIS_URL set),
	@# the consumer that stores it (without Redis it says so and exits: the server stores its own).
	$(BIN)/python -m bench.standin_provider --port 8001 & provider=$$!; \
	  $(BIN)/python manage.py consume_metering & consumer=$$!; \
	  trap 'kill $$provider $$consumer 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/python manage.py runserver --insecure $(HOST):$(PORT)

serve: install
	$(BIN)/python manage.py runserver --insecure $(HOST):$(PORT)

# The translation catalogs (locale/): gather the marked strings, then compile. Needs gettext; the
# compiled .mo files are committed, so running the portal does not.
.PHONY: messages
messages: install
	$(BIN)/python manage.py makemessages --no-obsolete -l zh_Hans -l ko -l ar \
	  --ignore '.venv/*' --ignore 'node_modules/*' --ignore 'staticfiles/*' --ignore 'tests/*' --ignore 'bench/*'
	$(BIN)/python manage.py compilemessages --ignore '.venv/*' --ignore 'node_modules/*'

# The production server: static files collected (hashed names) and served by WhiteNoise, DEBUG off.
.PHONY: serve-prod
serve-prod: export STATIC_COLLECTED = true
serve-prod: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@# The gateway's workers hand their metering over through Redis; this process stores it
	@# (portal/gateway/metering.py: why not in the workers). Stopped after gunicorn, batch finished.
	$(BIN)/python manage.py consume_metering & consumer=$$!; \
	  trap 'kill $$consumer 2>/dev/null' EXIT INT TERM; \
	  BIND=$(HOST):$(PORT) $(BIN)/gunicorn -c portal/gunicorn_conf.py

test: install
	$(BIN)/python -m pytest

# The vendors' client libraries against a live server (tests/clients; each in its own cached venv).
.PHONY: test-clients
test-clients: install
	$(BIN)/python -m pytest tests/clients

# The schema-driven fuzzer (tests/fuzz, issue 14) with a long budget: FUZZ_EXAMPLES examples per
# operation and generation mode (the suite's own run takes 10), seed FUZZ_SEED; its figures go to
# test-artifacts/fuzz.json.
.PHONY: fuzz
fuzz: FUZZ_EXAMPLES ?= 100
fuzz: install
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider -q --show-capture=no tests/fuzz

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/ram_evaluator.py
	$(BIN)/python -m bench.verify_key
	$(BIN)/python -m bench.usage_engine $(BENCH_ARGS)

worker: install
	$(BIN)/celery -A portal worker --loglevel=INFO

beat: install
	$(BIN)/celery -A portal beat --loglevel=INFO

clean:
	rm -rf $(VENV) db.sqlite3 .test-db.sqlite3* .pytest_cache

# The nightly invoice job at 1,000 organizations (SQLite, or PostgreSQL with DATABASE_URL): bench/RESULTS.md.
.PHONY: bench-billing
bench-billing: install
	$(BIN)/python -m bench.billing

# Server time of every portal page with the demo's data (and, with BENCH_ARGS=--bench-db, on the
# ten-million-event database bench.usage_engine --keep-db left): bench/RESULTS.md.
# POST /api/v1/usage/events under gunicorn (portal/gunicorn_conf.py), 1 and 4 writers over HTTP,
# next to the in-process figure and COPY, on a throwaway database of DATABASE_URL's server
# (PostgreSQL only): bench/RESULTS.md. BENCH_ARGS="--seconds 60" for a longer run.
.PHONY: bench-ingest
bench-ingest: install
	$(BIN)/python -m bench.ingest_http $(BENCH_ARGS)

# What the gateway adds to a call: 32 clients, 30 s a phase, plain and streamed, through the gateway
# and straight to the stand-in provider (bench/gateway.py): bench/RESULTS.md.
.PHONY: bench-gateway
bench-gateway: install
	$(BIN)/python -m bench.gateway $(BENCH_ARGS)

.PHONY: bench-pages
bench-pages: install
	$(BIN)/python -m bench.pages $(BENCH_ARGS)
