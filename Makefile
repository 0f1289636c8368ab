# make test : create .venv (once), install the project with its extras, run the test suite.
# make demo : synthesise a small hazy set, train gUNet-T on the CPU, test it, print the result.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gunet-installed
# PyPI's torch default is a multi-GB CUDA build; these are the releases this project is tested on.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
BASICSR_PKG ?= basicsr==1.4.2

.PHONY: test demo venv clean-demo

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel

# Re-runs only when setup.py changes, so a second `make test` installs nothing.
$(STAMP): setup.py | $(PY)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install $(TORCH_PKGS)
	# basicsr ships as an sdist whose setup.py imports torch: build it against the torch above.
	$(PY) -c "import importlib.util as u, sys; sys.exit(u.find_spec('basicsr') is None)" \
		|| $(PY) -m pip install --no-build-isolation $(BASICSR_PKG)
	$(PY) -m pip install --no-build-isolation -e '.[test,deploy]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	@echo "make demo is not available yet" >&2; exit 1
