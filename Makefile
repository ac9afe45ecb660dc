# The two things a newcomer does: `make run` (playground on the embedded model) and `make test`.
# Everything installs into .venv; the first install compiles llama.cpp (~4 min on 2 cores).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: install install-dev run gateway test lint bench screenshots docker-test team-up team-down team-test clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(PY) -m streamlit run playground/app.py --server.port $(PORT)

gateway: install
	$(PY) -m gateway

test: install-dev
	$(PY) -m pytest

# Static checks (settings in pyproject.toml): ruff's lint and format check over the tree, mypy over
# conductor_core and gateway. CI runs it before the tests.
lint: install-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# LiteLLM (the overhead baseline) lives in its own venv: it would downgrade a core dependency.
.venv-bench/.installed: requirements-bench.txt
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -r requirements-bench.txt
	touch $@

bench: install-dev .venv-bench/.installed
	$(PY) -m benchmarks

# docs/*.png from a real run: loopback protocol servers, the embedded model, an hour of traffic through
# the core, then Chromium on every page (scripts/screenshots.py; about 10 minutes).
screenshots: install-dev
	$(PY) scripts/screenshots.py --out docs

# The Docker image and the compose stack, built once and smoke-tested as a user would (gateway,
# playground in Chromium, PostgreSQL): docker/smoke-test.sh. Starts (and then stops) dockerd
# if none runs; on Debian as root it installs what is missing.
docker-test: install-dev
	PY=$(PY) bash docker/smoke-test.sh

# Several replicas (docker-compose.team.yml): two gateways, two playgrounds, workers, PostgreSQL,
# Redis and a Caddy proxy with sticky sessions. team-up builds conductor:latest (incrementally),
# brings the stack up healthy and prints its URLs; team-down stops it. team-test runs the same
# stack on free ports and checks shared breakers, AUTO, a Redis outage, the proxy and the
# experiment workers driven from both playgrounds' pages in Chromium
# (docker/team.sh, docker/team.py); it removes what it started.
team-up: install-dev
	PY=$(PY) bash docker/team.sh up

team-down: install-dev
	PY=$(PY) bash docker/team.sh down

team-test: install-dev
	PY=$(PY) bash docker/team.sh test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
