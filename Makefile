# The two commands a new machine needs: `make serve` and `make test`. Both set everything up first
# and are fast when nothing changed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# llama-cpp-python builds from source (about 4 minutes on 2 cores); pip's wheel cache keeps the build.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: serve test check install model clients web webapp browser lint format bench dist

serve: model webapp
	$(VENV)/bin/lmdock serve $(ARGS)

# Everything: the fast tier's checks, then every test (unit, engine, e2e, upstream; 25-60 min on 2 cores, by VM).
test: model clients web browser lint
	$(VENV)/bin/pytest --durations=30 $(PYTEST_ARGS)

# The fast tier, no model loaded (well under two minutes): lint, types, the layer contract, tests/unit.
check: lint
	$(VENV)/bin/pytest tests/unit -q $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e '.[model,dev]'
	touch $@

model: $(STAMP)
	$(VENV)/bin/lmdock model prepare

clients: node_modules/.package-lock.json

# `npm install`, not `npm ci`: opencode-ai lists a binary package per platform as optional, and registries
# that mirror only this platform's cannot put the others in the lock, which `npm ci` then refuses. The
# versions stay the lock's (package.json pins every client exactly; the lock is left unchanged).
node_modules/.package-lock.json: package.json package-lock.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# The web app at / (web/, built into the package at src/lmdock/http/webapp; not committed).
WEB_OUT := src/lmdock/http/webapp/index.html
WEB_SRC := $(wildcard web/src/*) web/index.html web/build.mjs web/tsconfig.json

web: $(WEB_OUT)

$(WEB_OUT): web/node_modules/.package-lock.json $(WEB_SRC)
	cd web && npm run --silent build

web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The release build: the web app, then the sdist and the wheel into dist/ (both carry the web app).
dist: $(STAMP) web
	rm -rf dist
	$(PY) -m build --outdir dist .

# `make serve` builds the web app when npm is there; without it the server runs and / says how to build.
webapp:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory web; \
	else echo "note: npm not found, so the web app at / is not built (install Node 20+, then make web)"; fi

# The browser the web app's tests drive (Playwright uses the system Chromium; its own download is not needed).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update && apt-get install -y chromium)

# ruff, the import-linter layer contract (pyproject.toml: each layer imports only those below it) and
# pyright (basic; pinned in package.json).
lint: $(STAMP) clients
	$(VENV)/bin/ruff check src tests bench build_support
	$(VENV)/bin/ruff format --check src tests bench build_support
	$(VENV)/bin/lint-imports
	node_modules/.bin/pyright

format: $(STAMP)
	$(VENV)/bin/ruff format src tests bench build_support
	$(VENV)/bin/ruff check --fix src tests bench build_support

bench: model
	$(PY) bench/compare_llama_server.py $(ARGS)
