# The two entry points of the README. Both create .venv inside the checkout on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run up test test-glue-versions test-native-sanitizers test-fuzz bench venv clean browser

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The Glue job's C module (shipping_ndjson, glue/native) in a venv, rebuilt when its sources change.
# Built with the venv's setuptools (no build isolation: offline, about two seconds) from a copy of
# the sources, so no old object file or build folder is ever reused and the checkout stays clean.
# Without a C compiler it is left out with a note: the job then proves lines with DuckDB alone, slower.
NATIVE_SOURCES := glue/native/pyproject.toml glue/native/setup.py glue/native/shipping_ndjson.c
%/.native-installed: %/.installed $(NATIVE_SOURCES)
	@if command -v "$$($*/bin/python -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')" >/dev/null 2>&1; then \
		source_copy=$$(mktemp -d) && cp $(NATIVE_SOURCES) "$$source_copy" && \
		$*/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
			--force-reinstall "$$source_copy" && rm -rf "$$source_copy" && touch $@; \
	else echo "no C compiler: the Glue job's C module (glue/native) is not built; the job uses its slower pure-DuckDB path"; fi

venv: $(VENV)/.native-installed

run: $(VENV)/.native-installed   ## run the whole pipeline on the embedded local stack
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

up: $(VENV)/.native-installed    ## the local stack as a service: API, dashboard, schedule, S3 events
	$(PY) -m local up $(ARGS)

# The Glue jobs' tests again, at the library versions the deploy ships to Glue (pyarrow 20 there,
# newer in .venv): see tests/glue_versions.py.
GLUE_VENV := .venv-glue
GLUE_TESTS := tests/test_json_to_parquet.py tests/test_native_prover.py tests/test_rules.py tests/test_conformance.py tests/test_normalize.py tests/test_catalog.py tests/test_jobio.py
$(GLUE_VENV)/.installed: requirements.txt requirements-dev.txt chalicelib/glue_jobs.py tests/glue_versions.py
	$(PYTHON) -m venv $(GLUE_VENV)
	$(GLUE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(GLUE_VENV)/bin/python tests/glue_versions.py > $(GLUE_VENV)/requirements.txt
	$(GLUE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(GLUE_VENV)/requirements.txt
	touch $@

test-glue-versions: $(GLUE_VENV)/.native-installed  ## the Glue jobs' tests at Glue's library versions
	$(GLUE_VENV)/bin/python -m pytest -q $(PYTEST_PARALLEL) $(GLUE_TESTS)

# checkov lints the `chalice package` Terraform output (tests/test_checkov.py); its dependencies
# clash with the project's, so it has a venv of its own.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
$(CHECKOV_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check 'pip<26.3'
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

# Test files run on TEST_WORKERS processes (pytest-xdist), a whole file per worker so a file's
# shared stack is started once. Most of an end-to-end test is a stack's processes waiting on one
# another, so two workers suit even two cores: the suite took 530 s instead of 881-1,101 s here.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile

# What the suite needs: independent installs (pip into three venvs, npm, apt), made side by side.
# One after another they took about 260 s of a fresh 18-minute CI run.
TEST_PREREQUISITES := $(VENV)/.native-installed node_modules/.installed browser $(GLUE_VENV)/.native-installed $(CHECKOV_VENV)/.installed
test:  ## run the test suite
	@echo "setting up what the tests need, side by side (each part's output shows when it is done): $(TEST_PREREQUISITES)"
	@$(MAKE) --no-print-directory -j4 --output-sync=target $(TEST_PREREQUISITES)
	$(PY) -m pytest $(PYTEST_PARALLEL)
	$(GLUE_VENV)/bin/python -m pytest -q $(PYTEST_PARALLEL) $(GLUE_TESTS)
	$(MAKE) --no-print-directory test-native-sanitizers

# The C prover's test suite and its fuzz test again, on a build of the module with AddressSanitizer
# and UndefinedBehaviorSanitizer (gcc): any invalid read or write, leak-free error path aside, or
# undefined behaviour aborts the run. Python itself is not instrumented: the sanitizers' runtimes
# are preloaded, and Python allocates with malloc so ASan sees every buffer. Bounded time: the
# fuzz test runs FUZZ_EXAMPLES examples per property (the plain run in `pytest` runs 400).
SANITIZED_DIR := build/native-sanitized
FUZZ_EXAMPLES ?= 300
test-native-sanitizers: $(VENV)/.native-installed  ## the C prover's tests under ASan/UBSan, with the fuzz test
	@rm -rf $(SANITIZED_DIR) && mkdir -p $(SANITIZED_DIR)
	gcc -shared -fPIC -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		-I"$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
		glue/native/shipping_ndjson.c -o $(SANITIZED_DIR)/shipping_ndjson.abi3.so
	LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	PYTHONMALLOC=malloc PYTHONPATH=$(SANITIZED_DIR) FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) SHIPPING_NDJSON_EXPECTED=$(SANITIZED_DIR) \
		$(PY) -m pytest -q -p no:cacheprovider tests/test_native_prover.py tests/test_prover_fuzz.py

# The fuzz test alone, longer: make test-fuzz FUZZ_EXAMPLES=20000
test-fuzz: $(VENV)/.native-installed  ## property-based fuzzing of the C prover against the reference
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/test_prover_fuzz.py

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

bench: $(VENV)/.bench-installed $(VENV)/.native-installed  ## our jobs against the peers (see docs/PERFORMANCE.md)
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(GLUE_VENV) $(CHECKOV_VENV) .local-stack .local-stack-* .local-stage.lock build/native-wheel build/glue-wheels build/glue-sites build/glue-downloads
