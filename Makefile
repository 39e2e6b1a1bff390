# Firelake: `make run` runs the whole pipeline, `make test` runs the test suite.
# Each target installs what it needs itself: a virtualenv with the Python packages, and
# the Apache Kafka broker's jars from Maven Central (cached in ~/.cache/firelake).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install kafka java browser run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

kafka: install java
	$(BIN)/firelake kafka fetch

# The broker runs on Java (17 or newer) and its jars come from Maven Central through mvn;
# as root (CI) a machine without them gets Debian's packages here.
java:
	@{ command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; } || \
	{ [ "$$(id -u)" = 0 ] && apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q default-jdk-headless maven; } || \
	{ echo "make needs Java 17+ and Maven for the Kafka broker: apt-get install default-jdk-headless maven" >&2; exit 1; }

# The dashboard test drives Debian's chromium headless; as root (CI) it is installed here.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
	{ echo "make test needs Debian's chromium for the dashboard test: apt-get install chromium" >&2; exit 1; }

run: kafka
	$(BIN)/firelake up

test: kafka browser
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: kafka
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .firelake lake
