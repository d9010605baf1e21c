# layerlab: two entry points for a fresh machine (see README.md).
#   make train   install layerlab[train,torch] into .venv, train seed650 on MNIST, write runs/seed650/
#   make test    install layerlab[test] + the external oracles (C cross compiler, QEMU,
#                LibreOffice, nnabla venv), then run the whole test-suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= $(abspath ../shared)
# Real MNIST beside the repo when present; otherwise layerlab looks in $LAYERLAB_DATA, the
# user cache, then downloads (with checksums).
DATA ?= $(or $(LAYERLAB_DATA),$(if $(wildcard $(SHARED)/data/mnist/t10k-images-idx3-ubyte.gz),$(SHARED)/data/mnist))
NNABLA_VENV ?= .venv-nnabla
RUN ?= runs/seed650
PYTEST_ARGS ?=

.PHONY: train test tools lint clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$*]"
	touch $@

train: $(VENV)/.installed-train,torch
	$(VENV)/bin/layerlab train --spec seed650 --recipe fast --out $(RUN) $(if $(DATA),--data-dir $(DATA)) $(if $(FORCE),--force)

tools:
	bash scripts/install-test-tools.sh

test: $(VENV)/.installed-test tools
	LAYERLAB_DATA=$(DATA) NNABLA_PYTHON=$(abspath $(NNABLA_VENV))/bin/python \
	  $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) $(NNABLA_VENV) build *.egg-info .pytest_cache
