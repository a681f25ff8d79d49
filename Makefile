# Two commands on a fresh machine: `make demo` and `make test`. Both run `make setup` first, which
# bootstraps everything (Debian packages when root, .venv with the pinned packages, model files,
# the broker binary) and does no work the second time.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ROLLCALL := $(VENV)/bin/rollcall
HOME_DIR := $(or $(ROLLCALL_HOME),var)
INSTALLED := $(VENV)/.installed
PACK := $(HOME_DIR)/models/open/manifest.json
TANSU := $(HOME_DIR)/bin/tansu
PERSON_INT8 := $(HOME_DIR)/cache/int8/.person-ready

.PHONY: setup debian demo test clean distclean

setup: debian $(INSTALLED) $(PACK) $(PERSON_INT8) $(TANSU)

debian:
	@bash infra/setup/debian-packages.sh

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "setup: Python 3.11+ is needed, found " + sys.version.split()[0] + ": set PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)

# On a machine with an NVIDIA driver (or ROLLCALL_GPU=1) the GPU build of onnxruntime replaces the CPU one.
$(INSTALLED): requirements.lock requirements-gpu.lock pyproject.toml | $(PY)
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -r requirements.lock
	@if $(PY) infra/setup/gpu_runtime.py; then \
	  $(PY) -m pip uninstall --disable-pip-version-check -q -y onnxruntime && \
	  $(PY) -m pip install --disable-pip-version-check -q --no-deps --require-hashes -r requirements-gpu.lock; \
	fi
	$(PY) -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	@touch $@

$(PACK): $(INSTALLED)
	$(ROLLCALL) models fetch open

$(TANSU): $(INSTALLED)
	$(ROLLCALL) stack fetch

# The room person detector's int8 variants (`[models] person_precision` auto: int8 on a CPU), built ahead so
# that no processor builds them while it serves cameras; again when the quantisation code changes (each
# variant is cached by its model and code, so only what changed is built).
$(PERSON_INT8): $(PACK) processor/quantize.py processor/stages/persons.py
	$(ROLLCALL) models quantize --person
	@touch $@

demo: setup
	$(ROLLCALL) demo

# The layer contract first (pyproject.toml, [tool.importlinter]): a lower layer importing a higher one fails
# the build before any test runs.
test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -rfEs

clean:
	-$(ROLLCALL) down
	rm -rf .pytest_cache

distclean: clean
	rm -rf $(VENV) var
