# All set-up for a fresh machine lives here. Every target is idempotent: a second
# run re-uses the virtual environment and pip's wheel cache and takes seconds.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
MMCV_VERSION ?= 2.1.0
SAM2_VERSION ?= 1.1.0

.PHONY: setup demo test test-fast lint format clean-venv gpu-report

setup: $(VENV)/.stamp-package

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip "setuptools<70" wheel

# torch first, pinned, so that nothing later resolves a different (CUDA) build.
$(VENV)/.stamp-torch: | $(BIN)/python
	$(BIN)/pip install "torch==$(TORCH_VERSION)"
	touch $@

# mmcv 2.1.0 ships only as a source archive; its setup.py needs torch already
# installed and pkg_resources (setuptools<70). ~15 min on 2 cores the first time,
# then pip's wheel cache makes it seconds.
$(VENV)/.stamp-mmcv: $(VENV)/.stamp-torch
	$(BIN)/pip install "setuptools<70" numpy ninja
	MMCV_WITH_OPS=1 MAX_JOBS=2 $(BIN)/pip install --no-build-isolation "mmcv==$(MMCV_VERSION)"
	touch $@

$(VENV)/.stamp-package: $(VENV)/.stamp-mmcv requirements.txt requirements-dev.txt pyproject.toml
	$(BIN)/pip install "torch==$(TORCH_VERSION)" -r requirements.txt -r requirements-dev.txt
	# sam2 ships as a source archive whose setup.py requires torchvision (which would pull
	# another torch) and builds a CUDA extension used only by video post-processing: install
	# it without dependencies (requirements.txt lists what its modeling code imports) and
	# without the extension, the same on CPU and GPU machines.
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --no-deps --no-build-isolation "sam2==$(SAM2_VERSION)"
	$(BIN)/pip install --no-build-isolation --no-deps -e .
	touch $@

# DEMO_ARGS=--sam2: the SAM 2 family (a Hiera encoder, SAM 2's decoder head).
demo: setup
	$(BIN)/python tools/demo.py $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest tests

# Every unit test, none marked slow (no subprocess, no tools/train.py run, no ViT-B-sized
# model): the tier to run while working; `make test` runs everything.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow"

# On a GPU machine, the first command to run: environment, correctness, memory and speed
# within a wall-time budget (--budget-s, default 420 s), written to work_dirs/gpu_report/.
# GPU_REPORT_ARGS passes options, e.g. GPU_REPORT_ARGS='--budget-s 300 --out-dir DIR'.
gpu-report: setup
	$(BIN)/python tools/analysis_tools/gpu_report.py $(GPU_REPORT_ARGS)

lint: setup
	$(BIN)/ruff format --check mmseg_sam tools tests configs
	$(BIN)/ruff check mmseg_sam tools tests configs

format: setup
	$(BIN)/ruff format mmseg_sam tools tests configs
	$(BIN)/ruff check --fix mmseg_sam tools tests configs

clean-venv:
	rm -rf $(VENV)
