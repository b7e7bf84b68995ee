# The two commands of README.md: `make demo` and `make test`. Each creates the virtual
# environment in .venv and installs chainwatch into it the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-tansu test-kafka soak check tools deploy-check up down clean
COMPOSE ?= docker compose
STACK := $(COMPOSE) -p chainwatch -f deploy/docker-compose.yml

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/chainwatch demo

# the whole suite on Tansu (the default engine), then the integration and fault suites again on
# Apache Kafka (tests/conftest.py: --broker-engine); both run, and either failing fails
test: $(BIN)/.installed tools
	@status=0; \
	$(BIN)/python -m pytest $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/python -m pytest $(KAFKA_SUITES) --broker-engine kafka $(PYTEST_ARGS) || \
		{ code=$$?; [ $$status -ne 0 ] || status=$$code; }; \
	exit $$status

KAFKA_SUITES ?= tests/integration tests/reliability

test-tansu: $(BIN)/.installed tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-kafka: $(BIN)/.installed tools
	$(BIN)/python -m pytest $(KAFKA_SUITES) --broker-engine kafka $(PYTEST_ARGS)

# the fault suite of tests/reliability at campaign size (CI runs it small, inside `make test`)
SOAK_ARGS ?= --fault-seed 1 --fault-kills 20 --fault-records 10000 --fault-flips 1000

soak: $(BIN)/.installed
	$(BIN)/python -m pytest tests/reliability --timeout=0 -p no:cacheprovider $(SOAK_ARGS) $(PYTEST_ARGS)

# prometheus + promtool, a Compose implementation, PostgreSQL's server, Chromium and its
# driver (the UI's browser test), from Debian's packages if missing; anvil and the Uniswap-V2
# contracts from npm (.ci/anvil), ethereum-etl in its own venv (.ci/cache/ethereum-etl)
tools:
	bash .ci/tools.sh

deploy-check: $(BIN)/.installed tools
	$(BIN)/python -m pytest -q tests/unit/test_deploy_*.py

up:
	$(STACK) up -d --build

down:
	$(STACK) down

check: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
