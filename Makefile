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

# The synthetic task end to end on the CPU (~4 minutes): make the data and
# tokenizer, finetune a tiny random Llama with 12 checkpoints in
# runs/synth-tiny (greedy train accuracy climbs), sample K=5 answers per
# example at every checkpoint on 64 train and 64 test examples (and, at the
# last one, with answer-starting preambles), then write the P-M accuracy
# report to runs/synth-tiny-report (report.md / report.html, charts, tables).
demo: libtorch
	$(PREMEM) doctor
	$(PREMEM) data synth --out data/synth
	rm -rf runs/synth-tiny runs/synth-tiny-report
	$(PREMEM) train --config examples/synth.toml
	$(PREMEM) eval-run --run runs/synth-tiny --limit 64 --samples 5 --max-new-tokens 96
	$(PREMEM) eval-run --run runs/synth-tiny --limit 64 --samples 5 --max-new-tokens 96 \
		--steps 768 --splits train --preamble First --preamble "We know that" --redo
	$(PREMEM) report runs/synth-tiny --out runs/synth-tiny-report

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
