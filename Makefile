# Every target bootstraps .venv from the project's own files, so each works on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SYSDEPS := .venv/.sysdeps
KRBSTAMP := $(VENV)/.kerberos
PYTEST_WORKERS ?= 2

.PHONY: run test lint bench bench-compare sysdeps clean

$(STAMP): pyproject.toml setup.py esafety/policy/_hostindex.c
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# System packages the tests drive for real (Chromium, Prometheus, PostgreSQL client).
$(SYSDEPS): scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh test
	@mkdir -p $(VENV) && touch $(SYSDEPS)

# Kerberos SSO (python-gssapi) compiles against libkrb5-dev, a system package: after SYSDEPS.
$(KRBSTAMP): $(STAMP) $(SYSDEPS)
	$(BIN)/pip install -q -e '.[kerberos]'
	touch $(KRBSTAMP)

run: $(STAMP)
	$(BIN)/esafety run

test: $(STAMP) $(SYSDEPS) $(KRBSTAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup tests/unit tests/integration tests/browser

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy esafety proxy_addons

# make bench [QUICK=1] [ONLY=engine,proxy]: side-by-side with the peers; results in var/bench/latest.json
bench: $(STAMP)
	bash scripts/install-system-deps.sh bench
	$(BIN)/python -m tests.bench.run $(if $(QUICK),--quick,) $(if $(ONLY),--only $(ONLY),)

bench-compare: $(STAMP)
	$(BIN)/python -m tests.bench.compare

clean:
	rm -rf $(VENV) var .pytest_cache
