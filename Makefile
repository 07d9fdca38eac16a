# premem: `make demo` runs the main job, `make test` runs every check CI runs.
# Both install the pinned libtorch into .libtorch/ first (once).

CARGO ?= cargo
PYTHON ?= python3
PREMEM = $(CARGO) run --quiet --bin premem --

.PHONY: all libtorch build demo test fmt clippy fixtures doctor clean

all: build

libtorch:
	@scripts/bootstrap-libtorch.sh

build: libtorch
	$(CARGO) build --workspace --all-targets

doctor: libtorch
	$(PREMEM) doctor

# The synthetic task end to end on the CPU (~3 minutes): make the data and
# tokenizer, finetune a tiny random Llama with checkpoints in runs/synth-tiny
# (greedy train accuracy climbs), then sample K=5 answers per example from the
# last checkpoint on train and test examples, with answer-starting preambles.
demo: libtorch
	$(PREMEM) doctor
	$(PREMEM) data synth --out data/synth
	rm -rf runs/synth-tiny
	$(PREMEM) train --config examples/synth.toml
	$(PREMEM) eval --checkpoint runs/synth-tiny --data data/synth/train.jsonl --split train \
		--limit 64 --samples 5 --max-new-tokens 128 --preamble First --out runs/synth-tiny-train.parquet
	$(PREMEM) eval --checkpoint runs/synth-tiny --data data/synth/test.jsonl --split test \
		--limit 64 --samples 5 --max-new-tokens 128 --out runs/synth-tiny-test.parquet

test: libtorch
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all

# Regenerates model/fixtures with transformers: needs a Python with
# torch==2.11.0 and transformers 5.x (set PYTHON=path/to/venv/bin/python).
fixtures:
	$(PYTHON) model/fixtures/make_fixtures.py

clean:
	$(CARGO) clean
