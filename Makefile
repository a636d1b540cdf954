# The commands a newcomer needs: `make demo`, `make check` before every commit, `make test`.
# All create .venv and install everything on first use; no root, no servers to start.
#
#   make check  `make lint` (ruff, and mypy as pyproject.toml configures it) and the tests that
#               start no worker or server (pytest -m "not worker and not slow"): under a
#               minute once installed. A test that starts a worker without its mark fails here.
#   make test   the whole suite (every assertion), in parallel with pytest-xdist: XDIST
#               processes, more than the cores because most tests wait (on workers, Redis,
#               the shipped 30 s stalled time) rather than compute; the long tests start first.
#               Under six minutes on 2 cores. PYTEST_ARGS adds pytest options (XDIST=0: serial).
#   make fuzz   the deep schemathesis search of the HTTP API (FUZZ_EXAMPLES cases per
#               operation and phase; minutes). `make test` runs the same test bounded
#               (3 cases): every operation is still called, the depth is what this adds.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
XDIST  ?= 4
FUZZ_EXAMPLES ?= 50
PARALLEL = $(if $(filter 0,$(XDIST)),-p no:xdist,-n $(XDIST) --dist loadgroup --no-loadscope-reorder)

.PHONY: venv demo check test fuzz lint types bench worker flower exporter clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/mobius-preview demo

check: lint
	MOBIUS_TEST_NO_WORKERS=1 $(BIN)/python -m pytest -n 2 -m "not worker and not slow" $(PYTEST_ARGS)

test: venv
	$(BIN)/python -m pytest $(PARALLEL) $(PYTEST_ARGS)

fuzz: venv
	MOBIUS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:xdist -s tests/test_api.py \
	    -k schemathesis $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

types: venv
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/render.py
	$(BIN)/python bench/queue.py
	$(BIN)/python bench/task.py

exporter: venv
	$(BIN)/mobius-preview exporter --port $${EXPORTER_PORT:-9808}

flower: venv
	$(BIN)/celery -A mobius_preview flower

worker: venv
	$(BIN)/celery -A mobius_preview worker --loglevel=INFO

clean:
	rm -rf $(VENV) data .pytest_cache *.egg-info
