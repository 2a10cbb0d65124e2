# Every target bootstraps .venv first, so a fresh clone needs only `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.swishkernels-installed
# Rebuild the extension when its sources or the build description change.
EXT_SOURCES := $(shell find csrc -name '*.h' -o -name '*.cpp' -o -name '*.cu' 2>/dev/null)

.PHONY: test lint test-gpu bench experiment check-cuda check-gpu-code-full roofline gpu-check venv clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt requirements-nodeps.txt pyproject.toml setup.py $(EXT_SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-build-isolation -e .
	touch $(STAMP)

# lint and check-cuda first: style, and CUDA sources that must compile even on machines that cannot run them.
test: $(STAMP) lint check-cuda
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu tests

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks --benchmark-enable --benchmark-only

experiment: $(STAMP)
	$(PY) -m yolo.experiment

check-cuda: $(STAMP)
	bash tools/check_cuda.sh

# The whole matrix of GPU builds (every kernel x dtype x sm_80/sm_90 x case; a few minutes on 2 cores).
# `make test` compiles a representative set of it (tests/test_gpu_code.py).
check-gpu-code-full: $(STAMP)
	env -u TRITON_INTERPRET $(PY) -m tools.gpu_code --set full

# The paper roofline table (compiled, not run), committed under benchmarks/results/static/.
roofline: $(STAMP)
	env -u TRITON_INTERPRET $(PY) -m tools.gpu_code --set full --json benchmarks/results/static/gpu_code.json \
		--table benchmarks/results/static/roofline.md

gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf build *.egg-info swishkernels/*.so .pytest_cache
