# Two commands do all the set-up: `make repro` (the pipeline) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# DVC runs each stage's `sokd ...` command through the shell: put the venv first on its PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: repro test install lint clean params bench-speed bench-accuracy benchmark bench-user-path bench-budget gpu-plan gpu-check docs

# Every section of the params is checked first (each stage checks only its own), so a typo stops
# the run before the first stage instead of at the stage that reads it. A preset runs as a DVC
# experiment: its `dvc exp run -S ...` line in docs/presets.md.
# The first stage, `fetch`, obtains the dataset (DVC tracks it, so `dvc exp run --queue` finds it).
repro: $(STAMP)
	python -m pipeline.core.template show params.yaml > /dev/null
	dvc repro

test: $(STAMP)
	ruff check .
	pytest

install: $(STAMP)

# params.yaml written afresh from the defaults in code, keeping its values (after a code change).
params: $(STAMP)
	python -m pipeline.core.template template params.yaml --out params.yaml

# Every table and figure in README.md and docs/, rendered from the committed metrics and benchmark
# JSON (tests/test_docs.py fails while a rendered block differs from what the JSON says).
docs: $(STAMP)
	python -m benchmarks.docs

# Benchmarks (minutes to an hour on 2 CPU cores); each prints a table and writes JSON.
bench-speed: $(STAMP)
	python -m benchmarks.speed --compile --out benchmarks/speed.json

bench-accuracy: repro
	python -m benchmarks.fast_vs_plain --out benchmarks/fast_vs_plain.json

# On a GPU machine, from a plain checkout (no venv, no dvc, no network): ~7 minutes. Its pipeline
# part runs the stage commands DVC resolved here (`make gpu-plan`: benchmarks/gpu_stages.txt).
gpu-plan: $(STAMP)
	python -m benchmarks.gpu_check --write-plan

gpu-check:
	PYTHONPATH=. $(PYTHON) -m benchmarks.gpu_check --out benchmarks/gpu.json

# The comparison (methods x seeds, ~75 min here) and the user path (photo folders, torchvision and
# timm pairs, two student budgets, 3 seeds, the shipped student's INT8 gate; ~75 min): each cell
# of benchmarks/<name>.yaml a queued experiment of this dvc.yaml, then the report from them.
benchmark bench-user-path: repro
	python -m benchmarks.experiments queue $(if $(filter benchmark,$@),comparison,user_path)
	dvc queue start
	python -m benchmarks.experiments collect $(if $(filter benchmark,$@),comparison,user_path) --wait

# The budget's search (docs/budget.md): five candidates x three budgets x three seeds on the
# Fashion-MNIST default and on photo folders, 18 queued experiments (about two hours here).
bench-budget: repro
	python -m benchmarks.experiments queue budget_fmnist
	python -m benchmarks.experiments queue budget_photos
	dvc queue start
	python -m benchmarks.experiments collect budget_fmnist --wait
	python -m benchmarks.experiments collect budget_photos

# Re-install only when the dependency list changes; a second `make` skips this.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[train,dev]'
	touch $(STAMP)

lint: $(STAMP)
	ruff check .
	ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
