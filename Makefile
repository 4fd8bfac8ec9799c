# One command sets everything up and runs the main job (make demo);
# one command sets everything up and passes the tests (make test).
PY      ?= python3
VENV    ?= .venv
# make gpu-check runs the GPU machine's own Python ($PYTHON when given, else python3), never the venv
GPU_PYTHON := $(if $(filter environment command,$(origin PYTHON)),$(PYTHON),python3)
PYTHON  := $(VENV)/bin/python
PIP     := $(PYTHON) -m pip
STAMP   := $(VENV)/.fastseg-deps

.PHONY: setup build demo test bench bench-quick cuda-check sass-report gpu-check arm-check clean

setup: build

# The first set-up (a few minutes) says what it is doing; later runs redo nothing unless
# pyproject.toml changes. torch 2.14.1 / torchvision 0.29.1 come from this machine's disk; the rest from PyPI.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (once; a few minutes): 4 steps"
	@test -x $(PYTHON) || { echo "  creating the virtual environment $(VENV)"; $(PY) -m venv $(VENV); }
	@echo "  [1/4] pip"; $(PIP) install -q --upgrade pip
	@echo "  [2/4] torch 2.14.1, torchvision 0.29.1"; $(PIP) install -q torch==2.14.1 torchvision==0.29.1
	@echo "  [3/4] build tools: setuptools, pybind11, cmake, ninja"; \
	  $(PIP) install -q "setuptools>=77" "pybind11>=2.12" "cmake>=3.24" ninja
	@echo "  [4/4] fastseg (editable) and its test dependencies, building the native extension"; \
	  $(PIP) install -q --no-build-isolation -e ".[test]"
	@touch $(STAMP) $(BUILT)

# The native extension is rebuilt only when a C++ / CUDA source or the build files change (Python
# sources are used in place: the install is editable). Incremental: CMake's tree in build/cmake is kept.
BUILT   := $(VENV)/.fastseg-built
NATIVE  := $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh') CMakeLists.txt setup.py
$(BUILT): $(STAMP) $(NATIVE)
	@echo "building the native extension fastseg._C (its sources changed; log: $(VENV)/build.log)"
	@$(PYTHON) setup.py -q build_ext --inplace > $(VENV)/build.log 2>&1 || { cat $(VENV)/build.log; exit 1; }
	@touch $(BUILT)

build: $(BUILT)

demo: build
	$(PYTHON) -m fastseg demo

# ruff on every Python file; mypy on the modules listed in pyproject.toml ([tool.mypy] files)
.PHONY: lint
lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

test: build
	$(PYTHON) -m pytest -q tests

# The full run is the README's source: its results file is committed, and the figures are generated from it.
bench: build
	$(PYTHON) -m pytest -q benchmarks --results benchmarks/results/latest.json
	$(PYTHON) tools/readme_figures.py

# CI's run: small shapes, results file under runs/bench/
bench-quick: build
	$(PYTHON) -m pytest -q benchmarks --quick

# The CUDA build cannot rot: every .cu compiles for each architecture, GPU or not (needs nvcc).
CUDA_ARCHS ?= 80 87 90
cuda-check:
	@command -v nvcc >/dev/null || { echo "cuda-check: no nvcc on this machine" >&2; exit 1; }
	@tmp=$$(mktemp -d); for f in csrc/cuda/*.cu; do for a in $(CUDA_ARCHS); do \
	  nvcc -std=c++17 -O3 --expt-relaxed-constexpr -arch=sm_$$a -Icsrc -c $$f -o $$tmp/out.o \
	  && echo "nvcc sm_$$a $$f: ok" || { rm -rf $$tmp; exit 1; }; done; done; rm -rf $$tmp

# SASS instructions per pixel (and channel) of every GPU kernel for sm_90 and sm_87, no GPU needed
# (benchmarks/gpu/sass_report.py); fails when a kernel got worse than its figure in sass_figures.json.
sass-report: $(STAMP)
	@command -v nvcc >/dev/null || { echo "sass-report: no nvcc on this machine (the CUDA C++ kernels need it)" >&2; exit 1; }
	$(PYTHON) benchmarks/gpu/sass_report.py

# On a machine with a CUDA GPU: the GPU tests, the conv table and the GPU benchmark in under 8 minutes,
# with what that machine has (its torch, Triton, CUDA; no venv, nothing installed); writes gpu-report.md.
# Without a GPU it says so and fails. CI does not run it.
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu/check.py --report gpu-report.md

# The aarch64 build cannot rot either: every C++ source compiles with Debian's g++-aarch64-linux-gnu
# (the CRF's aarch64 answer is checked under qemu-aarch64 by tests/test_native_targets.py).
PYBIND_INC = $(shell $(PYTHON) -c "import pybind11; print(pybind11.get_include())")
PY_INC = $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_paths()['include'])")
arm-check: $(STAMP)
	@command -v aarch64-linux-gnu-g++ >/dev/null || { echo "arm-check: apt-get install g++-aarch64-linux-gnu" >&2; exit 1; }
	@tmp=$$(mktemp -d); for f in csrc/cpu/*.cpp csrc/bindings/*.cpp csrc/target/*.cpp csrc/tests/*.cpp; do \
	  aarch64-linux-gnu-g++ -std=c++17 -O2 -march=armv8.2-a -fopenmp -fPIC -Icsrc -I$(PYBIND_INC) -I$(PY_INC) \
	    -c $$f -o $$tmp/out.o && echo "aarch64 $$f: ok" || { rm -rf $$tmp; exit 1; }; done; rm -rf $$tmp

clean:
	rm -rf build *.egg-info fastseg/_C*.so
