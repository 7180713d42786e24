# The hub's commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
PYTEST_ARGS ?=
STATE_DIR ?= var/local
# KAFKA_BROKERS=3 make up / make test: a three-node Kafka cluster instead of one node
KAFKA_ENV := $(if $(KAFKA_BROKERS),HUB_LOCAL_KAFKA_BROKERS=$(KAFKA_BROKERS))

.PHONY: help install up down status scale handover test test-unit test-all contracts contracts-check security-doc demo bench bench-stall faults clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-16s %s\n", $$1, $$2}'

install: ## install uv if missing, the Python workspace (locked), and the Kafka jars
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --locked
	$(UV) run python -m hub_devstack fetch-kafka

up: install ## start Kafka, PostgreSQL, the SMTP sink and the four services; Ctrl-C stops them (ZOHO=fake: the fake Zoho and both connectors instead of the sandbox)
	$(KAFKA_ENV) $(if $(ZOHO),HUB_LOCAL_ZOHO=$(ZOHO)) $(UV) run python -m hub_devstack up --state-dir $(STATE_DIR)

down: ## stop a stack left running by `make up`
	$(UV) run python -m hub_devstack down --state-dir $(STATE_DIR)

status: ## what `make up` is running
	$(UV) run python -m hub_devstack status --state-dir $(STATE_DIR)

scale: ## run N replicas of a service on the running stack: make scale SERVICE=tasks N=3 (prints how long the handover took)
	$(UV) run python -m hub_devstack scale $(SERVICE) $(N) --state-dir $(STATE_DIR)

handover: ## measure partition handover of SERVICE (default tasks): scale-up, graceful stop, SIGKILL of one extra replica
	$(UV) run python -m hub_devstack handover $(or $(SERVICE),tasks) --state-dir $(STATE_DIR)

test: install ## unit, integration (real Kafka + PostgreSQL) and end-to-end tests; JUnit XML in reports/
	@mkdir -p reports
	$(KAFKA_ENV) $(UV) run pytest -m "not slow" --junitxml=reports/junit.xml $(PYTEST_ARGS)

test-all: install ## everything, the long fault suite included
	@mkdir -p reports
	$(UV) run pytest --junitxml=reports/junit-all.xml $(PYTEST_ARGS)

faults: install ## the long fault suites (echo+tasks+notifications; all four services on 3 brokers): kills, broker/DB/SMTP restarts, bad inputs (HUB_FAULTS_EVENTS, HUB_FAULTS_KILLS, HUB_FAULTS_RATE, HUB_FAULTS_LANES); figures in docs/faults/LAST_RUN.md
	$(UV) run pytest tests/faults -m slow -s $(PYTEST_ARGS)

contracts: install ## export every event's JSON Schema and every service's AsyncAPI document to contracts/
	$(UV) run python -m hub_platform.contracts export contracts

contracts-check: install ## fail if the committed contracts and the code disagree
	$(UV) run python -m hub_platform.contracts check contracts

security-doc: install ## run every attack-marked test and rewrite the attack table of docs/security.md with the results
	@mkdir -p reports
	HUB_SECURITY_REPORT=reports/security.json $(UV) run pytest -m attack $(PYTEST_ARGS); status=$$?; \
	$(UV) run python -m hub_devstack.security_report reports/security.json docs/security.md && exit $$status

demo: ## tell a story through the FAQ against the stack `make up` runs (STATE_DIR); ZOHO=fake: a CRM task through the fake Zoho and both connectors to Projects and back (against `make up ZOHO=fake`)
ifeq ($(ZOHO),fake)
	$(UV) run python -m hub_devstack.zoho_demo --state-dir $(or $(HUB_STATE_DIR),$(STATE_DIR))
else
	$(UV) run python -m hub_sandbox.demo --state-dir $(or $(HUB_STATE_DIR),$(STATE_DIR))
endif

bench: install ## throughput, latency, lag and memory of the pipeline on the local stack; BASE=<ref> (e.g. d57f9af) also runs that commit's services and prints new ÷ old
	HUB_BENCH_COMMAND="make bench$(if $(BASE), BASE=$(BASE))" $(if $(BASE),HUB_BENCH_BASELINE_REF=$(BASE)) $(UV) run python -m bench

bench-stall: install ## does a service catch up after a 0.5 s freeze? tasks at half load, consumer fetch wait 500 vs 50 ms
	$(UV) run python -m bench.stall

clean: ## remove local state, reports and caches of this checkout
	rm -rf var reports .pytest_cache
