# make test : create .venv (once), install the project with its extras, lint, run the test suite.
# make lint : ruff (ruff.toml) over the whole tree.
# make test-system : the tests marked system (kills, Ctrl-C, locks, peak memory, the demo, clones).
# make test-gpu : the tests marked cuda, on a machine with CUDA.
# make test-cluster : the tests marked cluster, on a real one-host Slurm cluster started for them.
# make test-browser : the tests marked browser (the results gallery in headless Chromium).
# make demo : synthesise a small hazy set, train gUNet-T on the CPU, test it, print the result.
# make clean-demo : remove what make demo made (data, model, results), to run it from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gunet-installed
# PyPI's torch default is a multi-GB CUDA build; these are the releases this project is tested on.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
BASICSR_PKG ?= basicsr==1.4.2

.PHONY: test test-system test-gpu test-cluster test-browser lint demo venv clean-demo

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
	$(PY) -m pip install --no-build-isolation -e '.[test,deploy,demo,openvino]'
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

# Every test has TEST_TIMEOUT seconds (pytest-timeout): one that hangs fails with its stack
# instead of holding the whole run until CI gives up. The slowest take well under a minute on a
# 2-core machine.
TEST_TIMEOUT ?= 600
PYTEST := $(PY) -m pytest -q -rs --timeout=$(TEST_TIMEOUT)

# -rs lists every skip, and a skip fails the run (tests/conftest.py): what the Makefile installs
# is never skipped. CUDA tests are deselected here, not skipped, and run by `make test-gpu`
# (system, cluster and browser tests by `make test-system`, `make test-cluster` and
# `make test-browser`, which CI runs after this).
# One pytest worker per core (pytest-xdist), a test file per worker so module fixtures are built
# once; tests/conftest.py gives each worker one torch thread. A worker that dies fails the run
# at once, naming its test: with --dist loadfile, pytest-xdist's replacement worker can wait
# forever for work that is never sent (pytest-dev/pytest-xdist#784).
test: lint
	$(PYTEST) -n auto --dist loadfile --max-worker-restart=0 -m 'not cuda and not cluster and not browser and not system' tests

test-system: $(STAMP)
	$(PYTEST) -m system tests

test-gpu: $(STAMP)
	$(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
		|| { echo 'make test-gpu: no CUDA device here' >&2; exit 1; }
	$(PYTEST) -m cuda tests

# The Debian packages named in $(1) that are not installed yet, installed with apt (nothing is
# downloaded when all are there).
define apt_install_missing
	@missing=$$(for p in $(1); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q ' installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing" $$missing; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
endef

# Debian's Slurm and MUNGE, installed only when missing; scripts/local_slurm.sh runs them as a
# one-node cluster with all its state in $(SLURM_DIR), and stops it however the tests end.
SLURM_DEBS ?= slurmctld slurmd slurm-client munge
SLURM_DIR ?= /tmp/gunet-slurm

test-cluster: $(STAMP)
	$(call apt_install_missing,$(SLURM_DEBS))
	export GUNET_SLURM_DIR=$(SLURM_DIR); scripts/local_slurm.sh start && . $(SLURM_DIR)/env \
		&& $(PYTEST) -m cluster tests/cluster; status=$$?; scripts/local_slurm.sh stop; exit $$status

# Debian's Chromium, installed only when missing, driven by Playwright for Python (the `browser`
# extra) through /usr/bin/chromium: Playwright's own browser download is never used.
BROWSER_DEBS ?= chromium

test-browser: $(STAMP)
	$(call apt_install_missing,$(BROWSER_DEBS))
	$(PY) -c "import playwright.sync_api" 2>/dev/null || $(PY) -m pip install --no-build-isolation -e '.[browser]'
	$(PYTEST) -m browser tests/browser

# The demo runs the commands a user runs on their own data; each step is redone only when what
# it reads changed, so a second `make demo` just prints the result again, and an interrupted
# training resumes (--auto_resume).
DEMO_DATA ?= datasets/demo
DEMO_SYNTH_ARGS ?= --count 10 --size 256 --heldout 1 --seed 3
DEMO_TRAIN_OPT ?= options/train_gunet_t_demo.yml
DEMO_TEST_OPT ?= options/test_gunet_t_demo.yml
DEMO_EXPERIMENT ?= experiments/train_gunet_t_demo
DEMO_WEIGHTS ?= $(DEMO_EXPERIMENT)/models/net_g_latest.pth
DEMO_RESULTS ?= results/test_gunet_t_demo
DEMO_METRICS = $(DEMO_RESULTS)/demo-heldout_metrics.csv

demo: $(STAMP) $(DEMO_METRICS)
	$(PY) scripts/demo_report.py --data $(DEMO_DATA)/heldout --results $(DEMO_RESULTS)

$(DEMO_DATA)/haze_params.csv: | $(STAMP)
	$(PY) scripts/synthesize_haze.py --output $(DEMO_DATA) $(DEMO_SYNTH_ARGS) --overwrite

# Both LMDBs in one recipe, side by side: each command is mostly interpreter start-up on one core.
# Either failing fails the target.
DEMO_LMDB = $(PY) scripts/prepare_lmdb.py --dataset its --storage raw --overwrite

$(DEMO_DATA)/train_lmdb/hazy.lmdb $(DEMO_DATA)/heldout_lmdb/hazy.lmdb &: $(DEMO_DATA)/haze_params.csv
	$(DEMO_LMDB) --hazy $(DEMO_DATA)/heldout/hazy --clear $(DEMO_DATA)/heldout/clear \
		--output $(DEMO_DATA)/heldout_lmdb & heldout=$$!; \
	$(DEMO_LMDB) --hazy $(DEMO_DATA)/train/hazy --clear $(DEMO_DATA)/train/clear \
		--output $(DEMO_DATA)/train_lmdb; train=$$?; \
	wait $$heldout && exit $$train

# Training runs as two ranks of batch 4 (the recipe's batch of 8) under torchrun, on the CPU with
# gloo: two single-threaded processes take about 1.4x the steps per second that one process with
# two threads does (oneDNN's kernels at these sizes scale poorly across threads). Each rank gets
# half the cores. With exactly one GPU, one rank of 8 instead (two NCCL ranks cannot share a GPU).
# Deferred (=): nvidia-smi runs only when the demo trains, not on every make.
DEMO_GPUS = $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
DEMO_RANKS ?= $(if $(filter 1,$(DEMO_GPUS)),1,2)
DEMO_THREADS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 3 ? n / 2 : 1 )))
DEMO_ONE_RANK = $(if $(filter 1,$(DEMO_RANKS)),--force_yml datasets:train:batch_size_per_gpu=8)

$(DEMO_WEIGHTS): $(DEMO_DATA)/train_lmdb/hazy.lmdb $(DEMO_TRAIN_OPT)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-$(DEMO_THREADS)} $(PY) -m torch.distributed.run --standalone \
		--nproc_per_node=$(DEMO_RANKS) gunet_arch/train.py -opt $(DEMO_TRAIN_OPT) --launcher pytorch \
		--auto_resume $(DEMO_ONE_RANK)

$(DEMO_METRICS): $(DEMO_WEIGHTS) $(DEMO_DATA)/heldout_lmdb/hazy.lmdb $(DEMO_TEST_OPT)
	$(PY) gunet_arch/test.py -opt $(DEMO_TEST_OPT)

# Back to before the first `make demo`: its data, model and results, with the copies BasicSR
# archives (*_archived_*) when an experiment name is reused.
clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_EXPERIMENT) $(DEMO_EXPERIMENT)_archived_* $(DEMO_RESULTS) $(DEMO_RESULTS)_archived_*
