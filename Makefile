# Two entry points: `make test` and `make demo`. Both create .venv on first use and install
# the project with every extra; re-running is cheap (a stamp file tracks pyproject.toml).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NOTEBOOKS := $(wildcard notebooks/*.ipynb)
PYTEST_ARGS ?=

export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TRL_EXPERIMENTAL_SILENCE := 1

.PHONY: install test lint demo bench notebooks clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# pytest exits 5 when it collects nothing: that is a failure only if the tree has tests.
test: lint
	@set +e; $(PY) -m pytest -m "not slow" $(if $(NOTEBOOKS),--nbmake --nbmake-timeout=600 $(NOTEBOOKS)) tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ] && [ -z "$$(find tests -name 'test_*.py' 2>/dev/null)" ]; then \
		echo "no tests in the tree yet"; exit 0; fi; exit $$rc

demo: $(STAMP)
	@for pkg in hf_plugins diffusers_plugins tv_plugins; do \
		if [ -f $$pkg/__main__.py ]; then echo "== $$pkg demo"; $(PY) -m $$pkg demo || exit 1; fi; \
	done

bench: $(STAMP)
	@for script in benchmarks/*.py; do \
		echo "== $$script"; $(PY) $$script --json benchmarks/results/$$(basename $$script .py).json || exit 1; \
	done

notebooks: $(STAMP)
	$(PY) -m pytest --nbmake --nbmake-timeout=600 $(NOTEBOOKS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
