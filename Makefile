# The two entry points of the README. Both create .venv inside the checkout on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test venv clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

run: $(VENV)/.installed   ## run the whole pipeline on the embedded local stack
	$(PY) -m local run $(ARGS)

test: $(VENV)/.installed  ## run the test suite
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .local-stack
