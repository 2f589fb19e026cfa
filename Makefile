# Cairn: `make run` starts it embedded on http://localhost:8000; `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test lint bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/cairn serve --port $${PORT:-8000}

# The suite runs in TEST_WORKERS pytest-xdist processes; tests marked with one xdist_group
# (those sharing the real Redis/RabbitMQ queues) stay in one process.
TEST_WORKERS ?= 2

test: $(STAMP_TEST)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

lint: $(STAMP_TEST)
	$(BIN)/ruff check app workers journeys tests bench
	$(BIN)/mypy journeys workers/channels --strict
	$(BIN)/mypy app workers

bench: $(STAMP_TEST)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/fanout.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/push.py
	$(BIN)/python bench/mail.py
	$(BIN)/python bench/trigger.py
	$(BIN)/python bench/journeys.py

clean:
	rm -rf $(VENV) instance .pytest_cache
