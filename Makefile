# Sandbox auth proxy. `make help` lists the verbs.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STATE := .state
IMAGE_TAG ?= dev
export IMAGE_TAG

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# The venv is a file target, so every verb below sets itself up on a fresh machine.
# The image's lock pins the runtime dependencies here too, so the tests run what the image ships.
$(VENV)/.installed: pyproject.toml images/sidecar/requirements.lock
	@py=$$(scripts/find-python) && echo "using $$py" && "$$py" -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@mkdir -p $(STATE)
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' images/sidecar/requirements.lock > $(STATE)/constraints.txt
	$(BIN)/pip install --quiet -e '.[dev]' -c $(STATE)/constraints.txt
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv with the proxy and the dev tools

.PHONY: ca
ca: $(VENV)/.installed ## generate a dev CA in .state/ca (keeps an existing one)
	@[ -f $(STATE)/ca/ca.crt ] || $(BIN)/python ca/generate.py --out $(STATE)/ca --common-name "auth-proxy dev CA"

.PHONY: run
run: ca ## run the proxy on 127.0.0.1:8080 (health :8081) with the embedded default policy
	@scripts/run-dev

.PHONY: lint
lint: $(VENV)/.installed ## ruff and mypy
	$(BIN)/ruff check addons ca k8s tests bench
	$(BIN)/ruff format --check addons ca k8s tests bench
	$(BIN)/mypy

.PHONY: test
test: $(VENV)/.installed ## lint, then every test: unit, integration, containers, e2e, short stress
	$(MAKE) lint
	$(BIN)/pytest tests

.PHONY: test-e2e
test-e2e: $(VENV)/.installed ## the sandbox pod end to end, under Docker
	$(BIN)/pytest -s tests/e2e

.PHONY: images
images: $(VENV)/.installed ## build auth-proxy:$(IMAGE_TAG) and sandbox-executor:$(IMAGE_TAG)
	$(BIN)/python -m images.build

.PHONY: bench
bench: $(VENV)/.installed ## direct vs sidecar vs mitmdump vs Squid; QUICK=1 for a short run
	$(BIN)/python -m bench $(if $(QUICK),--quick)

.PHONY: stress
stress: $(VENV)/.installed ## the full load, fault and hostile-input suite
	STRESS_FULL=1 $(BIN)/pytest -s tests/stress

.PHONY: clean
clean: ## remove the venv, state and caches
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache
