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

# For now: load a tiny Llama made by transformers and sample from it.
demo: libtorch
	$(PREMEM) doctor
	$(PREMEM) generate --model model/fixtures/llama \
		--prompt "Natalia sold 48 clips in April." --prompt "How many clips?" \
		--samples 2 --max-new-tokens 24 --temperature 0.8 --top-p 0.95 --seed 1

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
