# Two entry points: `make demo` and `make test`. Every install step lives here.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
DEMO_DIR ?= var/demo
DEMO_ITEMS ?= 50000
DEMO_DAYS ?= 30

.PHONY: demo test lint typecheck unit env system-deps clean

# uv comes from PyPI; the lock file pins everything else.
$(BIN)/kpi: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PY) -m pip install --quiet --user uv || $(PY) -m pip install --quiet --break-system-packages uv
	$(UV) sync --frozen
	@touch $@

env: $(BIN)/kpi

# Debian's prometheus and alertmanager are the real servers the tests run against.
system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then \
		echo "installing Debian packages prometheus prometheus-alertmanager"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null; \
	fi

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/python scripts/check_sizes.py

typecheck: env
	$(BIN)/mypy

unit: env system-deps
	bash scripts/pytest.sh

test: lint typecheck unit

# The demo installs Prometheus and Alertmanager like the tests do, so its alerts fire.
demo: env system-deps
	bash scripts/demo.sh "$(DEMO_DIR)" "$(DEMO_ITEMS)" "$(DEMO_DAYS)"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
