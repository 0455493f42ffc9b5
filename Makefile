# cvscore developer entry points. Each target sets itself up: a fresh clone needs only
# `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

PKG_DIRS := metrics exporters server client evaluate gate cli
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck pytest bench bench-coco gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard protos/*/*.proto protos/*/*/*.proto)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/cvscore demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' editable finder for mapped folders, so it checks the
# package through a tree of links laid out as it is installed.
typecheck: install
	rm -rf .typecheck && mkdir -p .typecheck/cvscore
	cp -r cvscore/. .typecheck/cvscore/
	for d in $(PKG_DIRS); do ln -s ../../$$d .typecheck/cvscore/$$d; done
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p cvscore

pytest: install
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

bench: install
	$(BIN)/python bench/compute.py

# COCO bbox / segm / keypoints against faster-coco-eval (the `bench` extra) and pycocotools.
bench-coco: install
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	$(BIN)/python bench/coco.py --images 1500
	$(BIN)/python bench/coco.py --images 5000

# On a machine with a CUDA GPU and a CUDA build of torch: the CUDA tests, then the GPU
# compute and serving benchmark (bench/results/gpu-<gpu>-<date>.md). Stops at once, exit 2,
# where CUDA is not usable.
gpu-check: install
	$(BIN)/python bench/gpu.py --preflight
	$(BIN)/python -m pytest -q -m cuda -rs
	$(BIN)/python bench/gpu.py --device cuda

clean:
	rm -rf $(VENV) .typecheck build *.egg-info cvscore/v1 cvscore/protos.pb
