# One venv, created on demand; every target below installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check -q -c constraints.txt
STAMP  := $(VENV)/.installed-all

.PHONY: help venv demo flower-demo flower-deploy-test test test-slow test-all lint docs docs-serve bench bench-quick clean

help:
	@echo "make demo       set up .venv, solve one round (quick start), then flex/greedy/balance on an easy task and in the capacity regime"
	@echo "make flower-demo  the Flower app: 10 simulated SuperNodes, 3 rounds (flwr run)"
	@echo "make flower-deploy-test  SuperLink + 2 SuperNodes on 127.0.0.1, one killed mid-run (slow)"
	@echo "make test       set up .venv and run the default test suite (< 10 min)"
	@echo "make test-slow  run the slow, opt-in tests"
	@echo "make lint       ruff + mypy on flexassign and fl_harness (what CI checks besides tests)"
	@echo "make docs       build the documentation site into site/ (offline, strict: warnings fail)"
	@echo "make bench      full solver benchmark (about 30 min); bench-quick for a smoke run"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[all]"
	$(BIN)/python -m flexassign warmup   # compile flow-warm's kernels once, now (numba)
	touch $(STAMP)

venv: $(STAMP)

# An easy task (digits: one expert can hold it) next to the capacity regime (10 domains,
# narrow experts, capacities 1-2: where balance can pay), both with probe deployment.
demo: $(STAMP)
	$(BIN)/python examples/quickstart.py
	$(BIN)/python -m fl_harness compare --dataset digits --strategies flex greedy balance \
		--seeds 0 --rounds 15 --eval-every 5 --quiet --no-plots --out runs/demo/easy
	$(BIN)/python -m fl_harness compare --regime capacity --dataset synthetic \
		--strategies flex greedy balance --seeds 0 --rounds 30 --eval-every 5 --quiet \
		--target-metric personal_accuracy --target 0.75 --out runs/demo/capacity
	@echo "What the numbers mean: 'personal' and 'newcomer' are accuracies on each client's own data with the experts it deploys (chosen by a probe of its data), 'global' scores those personal subsets on every class (a generalist metric), 'util. CV' is expert-load imbalance (0 = balanced), 'rounds to' counts rounds to a fixed accuracy (capacity run: personal 0.75); one seed and few rounds, so read the study (docs/results.md) for intervals."
	@echo "plots and tables: runs/demo/"

# flwr run with a throwaway Flower home (Flower 1.41 keeps the federation size in the
# user's Flower config, so it is given on the command line); the local SuperLink that
# flwr starts in the background is stopped afterwards.
flower-demo: $(STAMP)
	@home=$$(mktemp -d); \
	export PATH="$(CURDIR)/$(BIN):$$PATH" FLWR_HOME="$$home" PYTHONPATH="$(CURDIR)" \
		FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0; \
	flwr run examples/flower --stream \
		--federation-config "num-supernodes=10 client-resources-num-cpus=1"; \
	rc=$$?; pkill -f "$$home/local-superlink" || true; sleep 2; rm -rf "$$home"; exit $$rc

# Deployment as an operator runs it: a SuperLink and two SuperNodes on 127.0.0.1 (free
# ports, throwaway FLWR_HOME, every process stopped by PID), two rounds of
# examples/flower with one SuperNode killed mid-run; prints the log tail and timings.
flower-deploy-test: $(STAMP)
	FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0 PYTHONPATH="$(CURDIR)" \
		$(BIN)/python -m pytest -m slow -s -q tests/test_flower_deploy.py

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check flexassign fl_harness tests benchmarks examples conftest.py docs
	$(BIN)/mypy flexassign fl_harness

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --clean

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/python -m benchmarks

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks --quick

clean:
	rm -rf $(VENV) build site *.egg-info .pytest_cache .ruff_cache .mypy_cache
