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

# The main job end to end on this machine (~3.5 minutes on 2 CPU cores):
# `premem run` with its built-in job (examples/cluster.toml) makes the
# synthetic task if missing, starts a coordinator, 2 trainer ranks on the TCP
# ring and 2 evaluators, trains a tiny random Llama for 24 epochs with a
# checkpoint each epoch, evaluates every checkpoint on 48 train and 48 test
# examples (K=5) as the checkpoints appear, shows the live P-M accuracy, and
# writes the report to runs/synth-cluster-report (report.md / report.html,
# charts, tables). Logs: premem-run/synth-cluster/logs/.
demo: libtorch
	$(PREMEM) doctor
	rm -rf runs/synth-cluster runs/synth-cluster-report premem-run/synth-cluster
	$(PREMEM) run

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
