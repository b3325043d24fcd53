# The two commands of the README: `make run` and `make test`.
# Everything they need is installed from here, on a machine with only
# Python >= 3.12 and a C compiler.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000

# The first Python >= 3.12 found: on PATH, then under pyenv.
PYTHON_BIN ?= $(shell for p in python3.14 python3.13 python3.12 python3 \
	$$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
	  if command -v $$p >/dev/null 2>&1 && \
	     $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    command -v $$p; break; fi; done)

.PHONY: run test test-postgres test-deploy lint format bench migrate browser postgres nginx clean help

help:
	@echo "make run    - install, migrate and serve http://127.0.0.1:$(PORT)/ with all workers"
	@echo "make test   - install test dependencies and run the whole suite (SQLite)"
	@echo "make test-postgres - the whole suite on a PostgreSQL server of its own"
	@echo "make test-deploy   - the deployment of deploy/ (nginx, gunicorn, Daphne, ...) on this machine"
	@echo "make lint   - ruff check and format check, import contracts"
	@echo "make bench  - run the benchmarks under bench/"

$(PY):
	@test -n "$(PYTHON_BIN)" || { echo "Python >= 3.12 not found; install it or set PYTHON_BIN=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.base-installed: requirements/base.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.test-installed: requirements/test.txt requirements/base.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements/test.txt
	touch $@

$(VENV)/.bench-installed: requirements/bench.txt requirements/test.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements/test.txt -r requirements/bench.txt
	touch $@

migrate: $(VENV)/.base-installed
	$(PY) manage.py migrate --no-input

run: migrate
	PORT=$(PORT) $(PY) -m project.devrun

# Headless Chromium for the browser tests (Debian's package, not a download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  echo "Installing Chromium with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# Debian's PostgreSQL server binaries (initdb, postgres) for test-postgres.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "Installing PostgreSQL with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi

# Debian's nginx for test-deploy (only the binary: the test starts its own).
nginx:
	@if [ ! -x /usr/sbin/nginx ]; then \
	  echo "Installing nginx with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	fi

# Each run's metrics in a folder of its own (prometheus_client's multi-process files).
METRICS_TMP = PROMETHEUS_MULTIPROC_DIR=$$(mktemp -d)

test: $(VENV)/.test-installed browser
	$(METRICS_TMP) $(PY) -m pytest

test-postgres: $(VENV)/.test-installed browser postgres
	$(METRICS_TMP) TEST_DATABASE=postgres $(PY) -m pytest

test-deploy: $(VENV)/.test-installed postgres nginx
	$(METRICS_TMP) $(PY) -m pytest tests/deploy --deploy

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(VENV)/.test-installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

BENCHMARKS := bench/queue.py bench/task_features.py bench/thumbnails.py bench/websocket.py

bench: $(VENV)/.bench-installed postgres
	@for b in $(BENCHMARKS); do echo "== $$b"; $(PY) $$b || exit 1; done
	@echo "== bench/queue.py --database postgres (our lane's rates on PostgreSQL)"
	$(PY) bench/queue.py --database postgres --only channelsbackend --only drain
	@echo "== bench/task_features.py --database postgres"
	$(PY) bench/task_features.py --database postgres

clean:
	rm -rf $(VENV) var
