# Two entry points: `make demo` and `make test`. Every install step lives here.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
DEMO_DIR ?= var/demo
DEMO_ITEMS ?= 50000
DEMO_DAYS ?= 30

.PHONY: demo test lint typecheck unit env system-deps clean mutants

# uv comes from PyPI; the lock file pins everything else.
$(BIN)/kpi: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PY) -m pip install --quiet --user uv || $(PY) -m pip install --quiet --break-system-packages uv
	$(UV) sync --frozen
	@touch $@

env: $(BIN)/kpi

# Debian's prometheus and alertmanager, PostgreSQL (the duty desk's production database)
# and chromium (the API docs page in a real browser) are the real servers the tests use.
system-deps:
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$$missing prometheus-alertmanager"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
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

# Mutation testing of the engine (minutes, not part of `make test`): scores and survivors.
mutants: env
	$(BIN)/python scripts/mutants.py $(MODULES)

demo: env
	bash scripts/demo.sh "$(DEMO_DIR)" "$(DEMO_ITEMS)" "$(DEMO_DAYS)"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
