# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DATA   := .data
export DOUBLEBACKPROP_DATA ?= $(abspath $(DATA))

.PHONY: setup demo test test-slow lint bench gpu-check clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV) $(DATA)
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/doublebackprop demo --out results/demo

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -m "not slow and not gpu" -q

test-slow: setup
	bash scripts/install_browser.sh
	$(PY) -m pytest -m "slow" -q

bench: setup
	$(VENV)/bin/doublebackprop bench --out results/bench

# On a CUDA machine only (not part of `make test`): float64 engine equality, CUDA autocast, bench.
gpu-check: setup
	PY=$(PY) bash scripts/gpu_check.sh results/gpu-check

clean:
	rm -rf $(VENV) $(DATA) results .pytest_cache .mypy_cache .ruff_cache
