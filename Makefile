# Set-up and main commands; each works on a fresh machine with only Python installed.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.aprkit-installed
OUT    ?= runs/demo
GPU_PYTHON ?= $(BIN)/python
GPU_OUT    ?= runs/gpu-check
GPU_ARGS   ?=
# the wheels in .whl/ installed into .whl/site (no network) unless pydantic is already importable, and the
# environment that puts the repository and .whl/site on the import path (gpu-check, gpu-studies)
GPU_SITE = if [ -d .whl ] && ! PYTHONPATH=.whl/site $(GPU_PYTHON) -c "import pydantic, pytest" 2>/dev/null; then \
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --target .whl/site .whl/*.whl \
	|| echo "gpu-check: installing .whl/ failed (see above); the run goes on, sections needing pydantic will say so"; fi
GPU_ENV = PYTHONPATH=.$$( [ -d .whl/site ] && echo :.whl/site )$${PYTHONPATH:+:$$PYTHONPATH} NO_ALBUMENTATIONS_UPDATE=1
# wheels of the runtime dependencies a bare GPU image may lack (carried to it in .whl/, see gpu-wheels)
GPU_WHEELS ?= pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 typing_extensions==4.16.0 \
             pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 packaging==26.4
GPU_PY_TAG ?= 3.12

.PHONY: install test test-slow lint demo bench gpu-check gpu-studies gpu-wheels gpu-slim gpu-unslim clean

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

## CUDA tests + every GPU benchmark in one go (at most 7.75 min, the sections' caps): GPU_OUT/gpu_check.{json,md}. Needs no install
## (the repo root is the import path): `make gpu-check GPU_PYTHON=python3` on a bare GPU machine;
## GPU_ARGS="--device cpu --quick" is the CPU smoke run
## A bare image without pydantic: run `make gpu-wheels` where pip reaches PyPI and carry .whl/ along; gpu-check
## then installs those wheels into .whl/site (no network) before it starts.
gpu-check:
	@$(GPU_SITE)
	$(GPU_ENV) $(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT) $(GPU_ARGS)

## issue 16's studies on a lent GPU within a time budget (benchmarks/repro/gpu_studies.py; the two-call procedure
## is in docs/reproductions.md): GPU_ARGS="--unpack .gpu_data/part0.npz --shared /tmp/shared --budget-s 420"
gpu-studies:
	@$(GPU_SITE)
	$(GPU_ENV) $(GPU_PYTHON) benchmarks/repro/gpu_studies.py --out $(GPU_OUT) $(GPU_ARGS)

## Wheels of GPU_WHEELS for a Python GPU_PY_TAG x86-64 GPU image into .whl/ (ignored by git)
gpu-wheels: $(STAMP)
	rm -rf .whl  # one version of each: two of a package stop the offline install
	$(BIN)/python -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY_TAG) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl $(GPU_WHEELS)

## Device calls send every tracked file: the committed reproduction results (41 MiB, mostly checkpoints) leave too
## little of a call's 64 MiB for the data shards. gpu-slim untracks them in the index only (the files stay; nothing
## to commit) and ignores them locally, so a call sends 3.9 MiB of tree; gpu-unslim restores both. Never commit
## between the two (gpu-slim refuses when anything is staged; a commit would delete the results).
SLIM_PATH = benchmarks/repro/results
gpu-slim:
	@git diff --cached --quiet || { echo "gpu-slim: changes are staged; commit them first" >&2; exit 1; }
	@mkdir -p .git/info && { grep -qxF '/$(SLIM_PATH)/' .git/info/exclude 2>/dev/null || echo '/$(SLIM_PATH)/' >> .git/info/exclude; }
	git rm -r -q --cached $(SLIM_PATH)

gpu-unslim:
	git reset -q -- $(SLIM_PATH)
	@if [ -f .git/info/exclude ]; then grep -vxF '/$(SLIM_PATH)/' .git/info/exclude > .git/info/exclude.tmp || true; \
		mv .git/info/exclude.tmp .git/info/exclude; fi
	@git diff --cached --quiet -- $(SLIM_PATH) && echo "gpu-unslim: $(SLIM_PATH) tracked again"

clean:
	rm -rf $(VENV) build *.egg-info
