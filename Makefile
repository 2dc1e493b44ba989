# The two commands a new machine needs: `make serve` and `make test`. Both set everything up first
# and are fast when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python builds from source (about 4 minutes on 2 cores); pip's wheel cache keeps the build.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: serve test install model clients lint format bench

serve: model
	$(VENV)/bin/lmdock serve $(ARGS)

test: model clients
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[model,dev]'
	touch $@

model: $(STAMP)
	$(VENV)/bin/lmdock model prepare

clients: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: model
	$(PY) bench/compare_llama_server.py $(ARGS)
