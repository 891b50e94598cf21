# Set-up and main commands; each works on a fresh machine with only Python installed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.aprkit-installed
OUT    ?= runs/demo
GPU_PYTHON ?= $(BIN)/python
GPU_OUT    ?= runs/gpu-check
GPU_ARGS   ?=

.PHONY: install test test-slow lint demo bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# frost textures only (data files of the imagecorruptions wheel; the package itself is never imported)
	$(BIN)/python -m pip install --quiet --no-deps imagecorruptions
	touch $(STAMP)

install: $(STAMP)

## the tests (fast suite; ../shared cases skip when it is absent)
test: $(STAMP)
	NO_ALBUMENTATIONS_UPDATE=1 $(BIN)/python -m pytest -q

## ruff and mypy on aprkit/ (configured in pyproject.toml; not a dependency of `test`)
lint: $(STAMP)
	$(BIN)/ruff check aprkit
	$(BIN)/mypy

## heavy real-data checks (opt-in)
test-slow: $(STAMP)
	NO_ALBUMENTATIONS_UPDATE=1 APRKIT_SLOW=1 $(BIN)/python -m pytest -q -m slow

## the main job on the embedded default (no downloads)
demo: $(STAMP)
	$(BIN)/aprkit demo --out $(OUT)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_augment.py

## CUDA tests + every GPU benchmark in one go (< 6 min): GPU_OUT/gpu_check.{json,md}. Needs no install
## (the repo root is the import path): `make gpu-check GPU_PYTHON=python3` on a bare GPU machine;
## GPU_ARGS="--device cpu --quick" is the CPU smoke run
gpu-check:
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} NO_ALBUMENTATIONS_UPDATE=1 $(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT) $(GPU_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
