# Two commands work on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pytest workers: 2 by default (CI has 2 cores); `make test JOBS=0` runs serially
JOBS ?= 2

.PHONY: demo lint test test-slow bench clean setup

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# torch first (the CPU build on these machines), then the package with its test extras
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/latentforge demo

# static checks (configured in pyproject.toml): ruff, and the import layers (import-linter)
lint: $(STAMP)
	$(VENV)/bin/ruff check latentforge tests bench
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q $(if $(filter 0,$(JOBS)),,-n $(JOBS))

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) bench/train_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
