# The two entry points of the README. Both create .venv inside the checkout on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run up test test-glue-versions bench venv clean browser

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

# Debian's chromium for the dashboard's browser test (tests/test_browser.py), driven by Playwright
# with executable_path (Playwright's own browser download is never used). Installed when missing and
# this is root with apt-get (as in CI); otherwise a note, and that test skips.
CHROMIUM ?= /usr/bin/chromium
browser:  ## install the browser the dashboard test drives
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
		|| { echo "chromium could not be installed: tests/test_browser.py will fail in CI, skip elsewhere"; exit 0; }; \
	else echo "chromium not found at $(CHROMIUM) and cannot be installed here (needs root and apt-get): tests/test_browser.py will be skipped"; fi

up: $(VENV)/.installed    ## the local stack as a service: API, dashboard, schedule, S3 events
	$(PY) -m local up $(ARGS)

# The Glue jobs' tests again, at the library versions Glue installs for the jobs (pyarrow 21 there,
# newer in .venv): see tests/glue_versions.py.
GLUE_VENV := .venv-glue
GLUE_TESTS := tests/test_json_to_parquet.py tests/test_normalize.py tests/test_catalog.py tests/test_jobio.py
$(GLUE_VENV)/.installed: requirements.txt requirements-dev.txt chalicelib/glue_jobs.py tests/glue_versions.py
	$(PYTHON) -m venv $(GLUE_VENV)
	$(GLUE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(GLUE_VENV)/bin/python tests/glue_versions.py > $(GLUE_VENV)/requirements.txt
	$(GLUE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(GLUE_VENV)/requirements.txt
	touch $@

test-glue-versions: $(GLUE_VENV)/.installed  ## the Glue jobs' tests at Glue's library versions
	$(GLUE_VENV)/bin/python -m pytest -q $(GLUE_TESTS)

test: $(VENV)/.installed node_modules/.installed browser $(GLUE_VENV)/.installed  ## run the test suite
	$(PY) -m pytest
	$(GLUE_VENV)/bin/python -m pytest -q $(GLUE_TESTS)

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

bench: $(VENV)/.bench-installed  ## our jobs against the peers (see docs/PERFORMANCE.md)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(GLUE_VENV) .local-stack
