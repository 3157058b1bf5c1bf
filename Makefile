# its-mle: `make demo` runs the agent on a bundled task with the embedded model; `make test` tests.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_TASK ?= tasks/tumor-diagnosis
DEMO_STEPS ?= 4
DEMO_ARGS ?=

.PHONY: setup demo test test-unit test-integration prepare model lint bench clean

$(VENV)/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh

setup: $(VENV)/.setup-done

prepare: setup
	$(PY) -m tasks.prepare

model: setup
	$(PY) -m serving.local fetch 0.5b

demo: setup
	$(PY) -m tasks.prepare $(notdir $(DEMO_TASK))
	$(PY) -m graphs.run --task $(DEMO_TASK) --steps $(DEMO_STEPS) --exec-timeout 300 $(DEMO_ARGS)

test: setup prepare model
	$(PY) -m pytest -q -ra tests

test-unit: setup prepare
	$(PY) -m pytest -q -m "not integration" tests

lint: setup
	$(PY) -m ruff check .

bench: setup prepare
	$(PY) -m benchmark.checkpoint_bytes

clean:
	rm -rf runs .pytest_cache
