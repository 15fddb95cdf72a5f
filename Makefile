# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create .venv and install everything on first use, idempotently.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.graphopt-installed
# The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build. TORCH_SPEC is
# passed to pip as words, so a CUDA build can come with its index:
#   make setup TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0
export NO_MKDOCS_2_WARNING := 1
SRC := graphopt solvers plugins tests benchmarks setup.py

.PHONY: setup demo test test-slow lint docs bench clean

$(STAMP): pyproject.toml setup.py solvers/ggm/_coordinate_descent.c
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev,demo,bench]"
	touch $(STAMP)

setup: $(STAMP)

# The demo replaces its own previous output (runs/demo) so it can be run again.
demo: setup
	$(BIN)/graphopt finetune --output-dir runs/demo --overwrite

lint: setup
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)

docs: setup
	$(BIN)/mkdocs build --strict --site-dir site

test: lint docs
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

clean:
	rm -rf $(VENV) site runs .pytest_cache .ruff_cache
