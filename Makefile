# orderstream — `make run` starts everything, `make test` proves it. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST := $(BIN)/pytest

.PHONY: install run test test-kafka test-unit test-integration test-e2e lint docs bench bench-hot bench-flow bench-profile stack-up stack-down kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m pip install --quiet --no-deps quixstreams==3.28.1
	@touch $(BENCH_STAMP)

run: install  ## start the embedded broker, PostgreSQL and the four services until Ctrl-C
	$(BIN)/orderstream run

test: install lint  ## lint, then unit, integration and end-to-end tests on the embedded stack
	$(PYTEST)

# Integration and e2e suites on real Apache Kafka (jars from Maven Central on first use):
# one node, then the cluster-only fault tests on three nodes.
test-kafka: install
	$(PYTEST) tests/integration tests/e2e --broker=kafka -m "not embedded_stack and not kafka_cluster"
	$(PYTEST) tests/integration tests/e2e --broker=kafka3 -m kafka_cluster -s

test-unit: install
	$(PYTEST) tests/unit

test-integration: install
	$(PYTEST) tests/integration

test-e2e: install
	$(PYTEST) tests/e2e

lint: install
	$(BIN)/ruff check services shared tests bench
	$(BIN)/orderstream templates check

bench: bench-hot bench-flow  ## every benchmark

# N reservations for one hot SKU: ours vs the naive Faust agent vs the PostgreSQL row lock
# (and Quix Streams when KAFKA_BOOTSTRAP_SERVERS names an Apache Kafka broker).
# Options: make bench-hot BENCH_ARGS="--orders 10000 --repeat 5 --budget 120"
bench-hot: $(BENCH_STAMP)
	$(BIN)/python -m bench.hot_sku $(BENCH_ARGS)

# The whole order flow through the four services (burst + paced) vs a logic-free relay.
# Options: make bench-flow BENCH_ARGS="--orders 20000 --rate 1000 --seconds 20 --workers 2"
bench-flow: install
	$(BIN)/python -m bench.flow $(BENCH_ARGS)

# The flow (ours only) with py-spy on every service: bench/results/flow_profile.md.
bench-profile: install
	$(BIN)/python -m bench.profile -- $(BENCH_ARGS)

docs: install  ## regenerate docs/schemas and docs/asyncapi.json from the event models
	$(BIN)/orderstream docs --out docs

stack-up: install
	$(BIN)/orderstream stack up

stack-down: install
	$(BIN)/orderstream stack down

kafka-up: install
	$(BIN)/orderstream kafka up --nodes 1

kafka-down: install
	$(BIN)/orderstream kafka down

clean:
	-$(BIN)/orderstream stack down
	-$(BIN)/orderstream kafka down
	rm -rf $(VENV) .state .cache .pytest_cache .ruff_cache
