# The two entry points of the README. Both create .venv inside the checkout on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test bench venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed   ## run the whole pipeline on the embedded local stack
	$(PY) -m local run $(ARGS)

# The reference ASL validator (npm asl-validator) used by the tests; skipped with a note without npm.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: the asl-validator test will be skipped"; fi

test: $(VENV)/.installed node_modules/.installed  ## run the test suite
	$(PY) -m pytest

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

bench: $(VENV)/.bench-installed  ## our jobs against the peers (see docs/PERFORMANCE.md)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) .local-stack
