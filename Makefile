# Two entry points: `make demo` and `make test`. Every install step lives here.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
DEMO_DIR ?= var/demo
DEMO_ITEMS ?= 50000
DEMO_DAYS ?= 30
# The Kafka broker's jars (tests, make demo-kafka): resolved by Maven from tools/kafka/pom.xml
# into a cache named after the pom's hash, so a version change resolves anew
# (tests/kafkakit.py computes the same path).
KAFKA_POM := tools/kafka/pom.xml
KAFKA_LIBS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/postal-kpi/kafka-$(shell sha256sum $(KAFKA_POM) | cut -c1-12)
MVN_DEPENDENCY_PLUGIN := org.apache.maven.plugins:maven-dependency-plugin:3.8.1

.PHONY: demo demo-kafka test lint typecheck unit env system-deps java-deps kafka-jars clean mutants

# uv comes from PyPI; the lock file pins everything else.
$(BIN)/kpi: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PY) -m pip install --quiet --user uv || $(PY) -m pip install --quiet --break-system-packages uv
	$(UV) sync --frozen --compile-bytecode
	@# Our own modules too (installed editable): a process that may not write bytecode
	@# (PYTHONDONTWRITEBYTECODE) would compile every import at every start (~1 s for `kpi api`).
	$(BIN)/python -m compileall -q kpi exporters kpi_cli
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

# Java 17 runs the Kafka broker; Maven fetches its jars from Maven Central.
java-deps:
	@if ! java -XshowSettings:properties -version 2>&1 | grep -Eq 'java.specification.version = (1[7-9]|[2-9][0-9])' \
		|| ! command -v mvn >/dev/null 2>&1; then \
		echo "installing Debian packages openjdk-17-jre-headless maven"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null; \
	fi

# Written to a temporary directory and renamed, so an interrupted download is never taken
# for a complete classpath.
kafka-jars: java-deps
	@if [ ! -f "$(KAFKA_LIBS)/.complete" ]; then \
		echo "resolving the Kafka broker's jars into $(KAFKA_LIBS)"; \
		rm -rf "$(KAFKA_LIBS).tmp" && \
		mvn -q -B -Dstyle.color=never -f $(KAFKA_POM) $(MVN_DEPENDENCY_PLUGIN):copy-dependencies \
			-DincludeScope=runtime -DoutputDirectory="$(KAFKA_LIBS).tmp" && \
		touch "$(KAFKA_LIBS).tmp/.complete" && rm -rf "$(KAFKA_LIBS)" && mv "$(KAFKA_LIBS).tmp" "$(KAFKA_LIBS)"; \
	fi

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo
	$(BIN)/python scripts/check_sizes.py

typecheck: env
	$(BIN)/mypy

unit: env system-deps kafka-jars
	bash scripts/pytest.sh

test: lint typecheck unit

# Mutation testing of the engine (minutes, not part of `make test`): scores and survivors.
mutants: env
	$(BIN)/python scripts/mutants.py $(MODULES)

# The demo installs Prometheus and Alertmanager like the tests do, so its alerts fire.
demo: env system-deps
	bash scripts/demo.sh "$(DEMO_DIR)" "$(DEMO_ITEMS)" "$(DEMO_DAYS)"

# The same on Kafka: a local broker (the tests' jars), an 8-partition topic, two exporter
# shards, Prometheus over both, the API and the live simulator publishing (docs/scaling.md).
demo-kafka: env system-deps kafka-jars
	KAFKA_LIBS="$(KAFKA_LIBS)" bash scripts/demo_kafka.sh var/demo-kafka/data "$(DEMO_ITEMS)" "$(DEMO_DAYS)"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
