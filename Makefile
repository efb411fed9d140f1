# tidegate — the two contract commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tidegate-installed
PYTEST_ARGS ?=
# make test runs pytest in parallel (pytest-xdist; groups in tests/conftest.py, decision
# 0170): the suite mostly waits on brokers, subprocesses and timeouts, so it runs more
# workers than cores; one more than cores already finishes the rest of the suite inside
# the isolated chain (the critical path), and more only loads the machine.
# TEST_WORKERS=0 (or make test-serial) runs it in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n + 1 > 8 ? 8 : n + 1 )))
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder
PY_PATHS := $(wildcard gateway simulators tests bench scripts)

.PHONY: help venv mosquitto postgresql chromium fuse lint format typecheck test test-serial unit demo bench bench-quick soak clean
.PHONY: docker-engine systemd-analyze image image-test footprint

help:
	@echo "make demo   - broker + simulator + gateway + a query, end to end"
	@echo "make test   - lint, type-check and the whole test suite (in parallel)"
	@echo "make test-serial - the same, the suite in one process (debugging)"
	@echo "make bench  - throughput/latency/memory benchmarks (docs/performance.md)"
	@echo "make soak   - a fleet for SOAK_MINUTES (30): RSS over time + verify (docs/performance.md)"
	@echo "make image  - the Docker image for this machine (scripts/build-image.sh)"
	@echo "make image-test - images for amd64, arm64, armv7 built and run, compose end to end"

$(STAMP): pyproject.toml scripts/ensure-venv.sh
	@scripts/ensure-venv.sh
	@touch $(STAMP)

venv: $(STAMP)

mosquitto:
	@scripts/ensure-mosquitto.sh

# Server binaries for the private PostgreSQL the tests and benches start (never the system one).
postgresql:
	@scripts/ensure-postgresql.sh

chromium:
	@scripts/ensure-chromium.sh

fuse:
	@scripts/ensure-fuse.sh

# The image test in make test needs an engine; without one (not root, no apt) it skips
# with the reason, so this never fails the build.
docker-engine:
	@scripts/ensure-docker.sh || echo "make: no Docker engine: tests/integration/test_image.py will skip" >&2

systemd-analyze:
	@scripts/ensure-systemd-analyze.sh

lint: venv
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/lint-imports --no-cache

format: venv
	$(BIN)/ruff format $(PY_PATHS)
	$(BIN)/ruff check --fix $(PY_PATHS)

typecheck: venv
	$(BIN)/mypy

test: venv mosquitto postgresql chromium fuse docker-engine systemd-analyze lint typecheck
	$(BIN)/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-serial: venv mosquitto postgresql chromium fuse docker-engine systemd-analyze lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv postgresql
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: venv mosquitto
	@$(BIN)/python scripts/demo.py

bench: venv mosquitto postgresql
	$(BIN)/python -m bench
	$(BIN)/python -m bench.fleet
	$(BIN)/python -m bench.direct
	$(BIN)/python -m bench.central --rows 300000 --catchup 3600000

image:
	@scripts/build-image.sh

# amd64, arm64 and armv7 (emulated) images + the README's compose run; docs/raspberry-pi.md.
image-test: venv mosquitto
	$(BIN)/python scripts/image-test.py

# RSS, CPU, start-up and bytes written per reading in the image, amd64 and arm64 (emulated).
footprint: venv mosquitto
	$(BIN)/python scripts/footprint.py

bench-quick: venv mosquitto postgresql
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.fleet --quick

soak: venv mosquitto
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo test-output
