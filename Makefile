# GOFR backup system. `make demo` and `make test` work on a fresh machine.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp
SHELL_SCRIPTS := $(shell git ls-files '*.sh' 2>/dev/null) .ci/run

.PHONY: install demo test lint bench bench-30d fuzz clean wheelhouse image

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: install
	VENV=$(VENV) bash scripts/demo.sh

# The suite runs on $(TEST_WORKERS) pytest-xdist workers, a test file to a worker (--dist loadfile:
# the Docker scenario builds its images once, in one worker). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 3
test: install
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src
	$(VENV)/bin/hadolint docker/backup/Dockerfile
	@if command -v shellcheck >/dev/null; then shellcheck -x $(SHELL_SCRIPTS); \
	  else echo "shellcheck not installed: skipped (.ci/run installs it)"; fi

fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -q -k "fuzz or never_crashes" tests/test_security.py tests/test_config.py tests/test_sources.py tests/test_cli_inputs.py

# all measurements, the 30-day simulation (days30) included; BENCH_ARGS picks sizes and parts, e.g.
# BENCH_ARGS="--only days30 --days-mb 300 --days 30"
bench: install
	$(PY) bench/bench.py $(BENCH_ARGS)

# the 30-day simulation alone (full mode, incremental mode, restic): bench/results/days30.md
bench-30d: install
	$(PY) bench/bench.py --only days30 $(BENCH_ARGS)

# wheels for the image's Python (3.11, manylinux x86_64), for builds that cannot reach an index
wheelhouse: install
	rm -rf wheelhouse
	$(PY) -m pip wheel -q --wheel-dir wheelhouse .

IMAGE ?= gofr-common-backup:latest
image:
	docker build -f docker/backup/Dockerfile -t $(IMAGE) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
