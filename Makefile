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

# Kernel settings other than this machine's defaults. Each changes which kernels run: ATen's vector
# width (AVX-512 here -> generic C++ / AVX2), oneDNN's instruction set (convolutions: AVX-512/AMX here ->
# SSE4.1 / AVX2) and the thread count (parallel reductions split differently). The suite's outcome must
# not depend on any of them.
PORTABLE_SETTINGS := ATEN_CPU_CAPABILITY=default ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=SSE41 \
	ONEDNN_MAX_CPU_ISA=AVX2 OMP_NUM_THREADS=1

# The numerically sensitive subset (fp32 formulas, level tables, accept/reject decisions, save/load
# round trips, convolutions) that `make test-portable` (CI) runs under every setting above. The one list:
# add test files or directories here. Budget ~2 min in all on 2 cores: each setting starts pytest anew
# (~7 s of imports) and runs the whole subset (~14 s): 5 x ~21 s. `time make test-portable` measured
# 144 s wall / 95 s CPU on the shared 2-core machine at load ~4 (so ~100 s idle). The ONEDNN settings
# only reach the files that run convolutions (diffusers_plugins, tv_plugins condensation;
# ONEDNN_VERBOSE=1 shows no oneDNN primitive in the hf_plugins loss files or the coreset closed forms);
# they still run the whole subset, which costs ~10 s in all and keeps one list. Split the list per
# setting if the subset outgrows the budget.
PORTABLE_TESTS := \
	tests/hf_plugins/test_losses.py \
	tests/hf_plugins/test_losses_chunked.py \
	tests/hf_plugins/test_losses_sparse.py \
	tests/hf_plugins/test_head_transforms.py \
	tests/diffusers_plugins/test_level_tables.py \
	tests/diffusers_plugins/test_rejection_sampler.py \
	tests/diffusers_plugins/test_pipeline.py \
	tests/diffusers_plugins/test_stable_diffusion_pipeline.py \
	tests/tv_plugins/condensation/test_objectives.py \
	tests/tv_plugins/coreset/test_closed_forms.py

# $(call under_each_setting,PYTEST TARGETS): run pytest once per setting, every setting even after a
# failure, then fail naming the settings that failed.
define under_each_setting
	@failed=""; for setting in $(PORTABLE_SETTINGS); do \
		echo "== $$setting: pytest $(1)"; \
		env $$setting $(PY) -m pytest -q -rf --disable-warnings -m "not slow" -p no:cacheprovider $(1) $(PYTEST_ARGS) \
			|| failed="$$failed $$setting"; \
	done; \
	if [ -n "$$failed" ]; then echo "== failed under:$$failed"; exit 1; fi; \
	echo "== passed under every setting: $(PORTABLE_SETTINGS)"
endef

.PHONY: install test lint test-portable test-matrix demo bench notebooks clean

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

# CI: the numerically sensitive subset under every kernel setting (see PORTABLE_TESTS).
test-portable: $(STAMP)
	$(call under_each_setting,$(PORTABLE_TESTS))

# Not in CI (5x the suite): the whole suite (tests/, without the notebooks) under every setting.
test-matrix: $(STAMP)
	$(call under_each_setting,tests)

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
