# premem: `make demo` runs the main job, `make test` runs every check CI runs.
# Both install the pinned libtorch into .libtorch/ first (once).

CARGO ?= cargo
PYTHON ?= python3
PREMEM = $(CARGO) run --quiet --bin premem --

.PHONY: all libtorch build demo test test-tools fuzz helm-check fmt clippy fixtures doctor clean reproduce reproduce-build reproduce-base reproduce-sweep reproduce-curation reproduce-templated

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
# examples (K=5) as the checkpoints appear, shows the live P-M accuracy,
# prints the URL of the live dashboard (docs/dashboard.md), and writes the
# report to runs/synth-cluster-report (report.md / report.html,
# charts, tables). Logs: premem-run/synth-cluster/logs/.
demo: libtorch
	$(PREMEM) doctor
	rm -rf runs/synth-cluster runs/synth-cluster-report premem-run/synth-cluster
	$(PREMEM) run

test: libtorch test-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	$(MAKE) helm-check

# The paper's experiments on the synthetic task, measured (docs/reproduction.md;
# the protocol, frozen before the main runs: examples/reproduce/PROTOCOL.md;
# not part of `make test`). Each part its own target, each resumable:
# reproduce-base: the data (varied-style targets; a pretraining corpus of
# 64,000 problems none of whose queries a split has), the base model
# pretrained on it (cached in runs/reproduce-base: a rerun reuses it) and
# Gate 0. reproduce-sweep: the appendix-A sweep from the base (3 learning
# rates x 3 data settings, 8 log-spaced checkpoints, K = 8, 500 test
# problems), the report with the out-of-sample R² of P-M and every
# baseline, the gates and the diagnostics. reproduce-curation: pm, iid, ifd
# and heuristic curation from the base over SEEDS (default "0 1 2 3 4"), the
# sample efficiency over iid with 95 % intervals. Writes
# runs/reproduce-*-report and the figures in docs/reproduction/.
# reproduce-templated: the first measurement (templated traces, random
# initialisation), kept for its negative result; not part of reproduce.
# They run the release build (its sampler is about 30 % faster than the
# debug profile's; the results are the same bits).
REPRODUCE = PREMEM=target/release/premem scripts/reproduce.sh

reproduce: reproduce-base reproduce-sweep reproduce-curation

reproduce-build: libtorch
	$(CARGO) build --release --quiet --bin premem

reproduce-base: reproduce-build
	$(REPRODUCE) base

reproduce-sweep: reproduce-build
	$(REPRODUCE) sweep

reproduce-curation: reproduce-build
	$(REPRODUCE) curation

reproduce-templated: reproduce-build
	$(REPRODUCE) templated-sweep
	$(REPRODUCE) templated-curation

# The parsers' property tests (core/tests/parsers_fuzz, curation/tests/spec_fuzz,
# model/tests/weights_fuzz and tokenizer_fuzz, evaluator/tests/manifest_fuzz)
# with FUZZ_CASES cases each instead of their 64: arbitrary bytes and mutated
# valid files to every parser, which must return a value or an error, never
# panic. Not part of `make test`. A failure's input is
# kept in the test's proptest-regressions/ file and replayed first next time.
FUZZ_CASES ?= 20000
fuzz: libtorch
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p premem-core --test parsers_fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p premem-curation --test spec_fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p premem-model --test weights_fuzz --test tokenizer_fuzz
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test -p premem-evaluator --test manifest_fuzz

# What the tests start besides the project's own code: Debian's Chromium and
# ChromeDriver for the dashboard's browser test (installed with apt when
# missing, which needs root), and TensorBoard's event reader and an MLflow
# server (tests/tools/requirements.txt) in .venv-test/, once.
test-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
		{ echo "make: the dashboard test needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver, as root)" >&2; exit 1; }
	@[ -x .venv-test/bin/python ] || $(PYTHON) -m venv .venv-test
	@.venv-test/bin/python -c 'import tensorboard, mlflow' 2>/dev/null || \
		.venv-test/bin/pip install --quiet --disable-pip-version-check -r tests/tools/requirements.txt

# Renders the Helm chart (k8s/premem) with a real Helm (the Helm v4 SDK of
# the helm-python-sdk wheel) for the default values, the GPU sweep values and
# overrides, validates every object against the Kubernetes 1.30 schemas, and
# checks that values flow through (tests/helm/validate_chart.py). The two
# packages go into .venv-helm/ once.
helm-check:
	@[ -x .venv-helm/bin/python ] || $(PYTHON) -m venv .venv-helm
	@.venv-helm/bin/python -c 'import helm_python, kubernetes_validate, yaml' 2>/dev/null || \
		.venv-helm/bin/pip install --quiet --disable-pip-version-check -r tests/helm/requirements.txt
	PREMEM_BIN=$(CURDIR)/target/debug/premem .venv-helm/bin/python tests/helm/validate_chart.py

fmt:
	$(CARGO) fmt --all

# Regenerates model/fixtures with transformers: needs a Python with
# torch==2.11.0 and transformers 5.x (set PYTHON=path/to/venv/bin/python).
fixtures:
	$(PYTHON) model/fixtures/make_fixtures.py

clean:
	$(CARGO) clean

# Container images (docker/README.md): `make image` (CUDA, Dockerfile) and
# `make image-cpu` (CPU only, Dockerfile.cpu). TAG: `git describe --tags`
# without a leading v, else the Cargo version (the Helm chart's appVersion).
DOCKER ?= docker
IMAGE ?= premem
TAG ?= $(shell git describe --tags --dirty 2>/dev/null | sed 's/^v//' | grep . || sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DOCKER_BUILD_ARGS = --build-arg VERSION=$(TAG) \
	--build-arg GIT_REVISION=$(shell git rev-parse HEAD 2>/dev/null || echo unknown)

.PHONY: image image-cpu require-docker

require-docker:
	@command -v $(DOCKER) >/dev/null 2>&1 || { \
		echo "make: '$(DOCKER)' not found: building the images needs Docker with BuildKit (https://docs.docker.com/engine/install/), or Podman (make DOCKER=podman ...)" >&2; \
		exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { \
		echo "make: '$(DOCKER) info' failed: is the Docker daemon running, and may this user reach it (DOCKER_HOST, the docker group)?" >&2; \
		exit 1; }

# DOCKER_BUILDKIT=1: the recipes use BuildKit cache mounts (docker without the
# buildx plugin then says so, instead of failing on `RUN --mount`).
image: require-docker
	DOCKER_BUILDKIT=1 $(DOCKER) build -f Dockerfile -t $(IMAGE):$(TAG) $(DOCKER_BUILD_ARGS) .

image-cpu: require-docker
	DOCKER_BUILDKIT=1 $(DOCKER) build -f Dockerfile.cpu -t $(IMAGE):$(TAG)-cpu $(DOCKER_BUILD_ARGS) .
