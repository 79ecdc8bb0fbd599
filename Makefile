# PAHT: the front door. `make run` starts everything; `make test` runs every check CI runs.
SHELL := /bin/bash
UV ?= uv
PY := $(UV) run --frozen
PAHT := $(PY) python -m paht_devenv
PYTEST := $(PY) pytest
SERVICE ?=
RATE ?= 50
SECONDS ?= 30

.PHONY: help bootstrap run up down status start stop kill restart logs migrate seed infra \
        test lint format typecheck test-unit test-integration test-contract test-e2e bench \
        mutation bench-e2e

help:
	@echo "make run | up | down | status | start|stop|kill|restart|logs SERVICE=intake"
	@echo "make test | lint | typecheck | test-unit | test-integration | test-contract | test-e2e"
	@echo "make bench | migrate | seed"

bootstrap:
	@deploy/local/bin/bootstrap

run: bootstrap
	$(PAHT) run

up: bootstrap
	$(PAHT) up

down:
	$(PAHT) down

status:
	$(PAHT) status

start stop kill restart logs:
	@test -n "$(SERVICE)" || (echo "usage: make $@ SERVICE=intake|routing|sla|notify|kafka|prometheus"; exit 2)
	$(PAHT) $@ $(SERVICE)

infra: bootstrap
	$(PAHT) infra

migrate: bootstrap
	$(PAHT) migrate

seed:
	$(PAHT) seed

test: bootstrap lint typecheck
	$(PYTEST) -q

lint:
	$(PY) ruff check .
	$(PY) ruff format --check .

format:
	$(PY) ruff format .
	$(PY) ruff check --fix .

typecheck:
	$(PY) mypy libs/common/src services/intake/src services/routing/src services/sla/src \
	    services/notify/src deploy/local/src

test-unit:
	$(PYTEST) -q tests/unit

test-integration: bootstrap
	$(PYTEST) -q tests/integration

test-contract:
	$(PYTEST) -q tests/contract

test-e2e: bootstrap
	$(PYTEST) -q tests/e2e

# mutmut on copies under .paht/mutation/ (never the work tree); MODULES= picks some, JOBS=2
mutation: bootstrap
	$(PY) python tests/mutation/mutate.py $(MODULES)

bench: bootstrap
	$(PY) python bench/bench_calendar.py
	$(PY) python bench/bench_sla.py --quick
	$(PY) python bench/bench_intake.py
	$(PY) python bench/bench_outbox_purge.py
	$(PY) python bench/bench_e2e_latency.py

# open-loop pipeline benchmark: POST /v1/reports at RATE/s for SECONDS → report.assigned webhook
bench-e2e: bootstrap
	$(PY) python bench/bench_pipeline.py --rate $(RATE) --seconds $(SECONDS) $(BENCH_ARGS)
