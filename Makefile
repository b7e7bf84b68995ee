# The two commands of README.md: `make demo` and `make test`. Each creates the virtual
# environment in .venv and installs chainwatch into it the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test soak check tools deploy-check up down clean
COMPOSE ?= docker compose
STACK := $(COMPOSE) -p chainwatch -f deploy/docker-compose.yml

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/chainwatch demo

test: $(BIN)/.installed tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
