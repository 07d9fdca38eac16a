# syntax=docker/dockerfile:1
#
# The premem image for GPU hosts (it runs on CPU-only hosts too): one `premem`
# binary, built against the CPU parts of libtorch, next to the full CUDA 13.0
# torch wheel, whose libtorch_cuda.so premem loads at start-up when a GPU is
# there (model/src/runtime.rs), and the NCCL that wheel brings.
#
#   make image                                  (or:)
#   docker build -t premem:0.1.0 .
#   docker run --rm --gpus all premem:0.1.0 doctor
#
# Dockerfile.cpu is the same binary on a slim CPU-only runtime. docker/README.md
# has the layout, the build arguments and what `premem doctor` prints.

ARG RUST_IMAGE=rust:1.95-bookworm
# The CUDA user-space libraries all come from the torch wheel's pip
# dependencies, so the `base` flavour (driver hook-up, cudart, the
# NVIDIA_REQUIRE_CUDA driver check) is enough; `-runtime-` works too but adds
# about 3 GB of duplicate CUDA libraries and a second libnccl.so.2.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-base-ubuntu24.04

# ---------------------------------------------------------------- builder ---
# Bookworm (glibc 2.36) on purpose: the binary then runs on both runtimes,
# Ubuntu 24.04 (glibc 2.39, Dockerfile) and Debian bookworm (Dockerfile.cpu).
FROM ${RUST_IMAGE} AS builder
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# The pinned CPU libtorch 2.11.0 (+ the two small CUDA wheels libtorch_cpu.so
# needs at load time) into /src/.libtorch, exactly as `make libtorch` does. Its
# own layer: rebuilt only when the script (its pins) changes.
COPY scripts/bootstrap-libtorch.sh scripts/bootstrap-libtorch.sh
RUN PIP_NO_CACHE_DIR=1 bash scripts/bootstrap-libtorch.sh

# torch-sys finds libtorch through LIBTORCH (the same path .cargo/config.toml
# gives); protoc comes from the protoc-bin-vendored crate (proto/build.rs).
# build.rs bakes $LIBTORCH/lib into the binary's run path; that directory is
# not in the runtime images, which set LD_LIBRARY_PATH instead.
ENV LIBTORCH=/src/.libtorch/torch
COPY . .
# .git is not in the build context (.dockerignore): build.rs records the
# GIT_REVISION build argument as the revision in run provenance instead.
ARG GIT_REVISION=
ENV PREMEM_GIT_REVISION=${GIT_REVISION}
RUN --mount=type=cache,id=premem-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=premem-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=premem-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin premem \
 && install -D -m 0755 target/release/premem /out/premem

# ---------------------------------------------------------------- runtime ---
FROM ${CUDA_IMAGE} AS runtime
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ARG CUDA_IMAGE
ARG DEBIAN_FRONTEND=noninteractive
# Must equal the libtorch the binary was built against: tch 0.24 binds
# libtorch 2.11.0 (Cargo.toml; scripts/bootstrap-libtorch.sh pins the same).
# Checked against the builder's libtorch below.
ARG TORCH_VERSION=2.11.0
# The CUDA 13.0 wheel index; PyPI is the fallback for the wheel's pip
# dependencies (set TORCH_EXTRA_INDEX_URL="" to use the torch index alone).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG TORCH_EXTRA_INDEX_URL=https://pypi.org/simple
# The Python of the base image (Ubuntu 24.04: 3.12); it names the venv's
# site-packages directory in LD_LIBRARY_PATH.
ARG PYTHON_VERSION=3.12

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# The torch wheel in a venv at /opt/torch: torch/lib holds libtorch_cpu.so and
# libtorch_cuda.so; its pip dependencies bring cuBLAS, cuDNN, ... (nvidia/*/lib)
# and NCCL (nvidia-nccl-cu13: nvidia/nccl/lib/libnccl.so.2). Triton is removed
# in the same layer: it only serves torch.compile from Python, which premem
# never runs (about 670 MB).
# cudarc (NCCL for CUDA trainer ranks) dlopens `libnccl.so`, which must be the
# very libnccl.so.2 that libtorch_cuda.so loaded, or the two copies clash:
# /opt/premem/nccl/libnccl.so points at it and comes first on LD_LIBRARY_PATH.
RUN python3 -m venv /opt/torch \
 && site=/opt/torch/lib/python${PYTHON_VERSION}/site-packages \
 && if [ ! -d "$site" ]; then \
        echo "error: the venv has no $site; set --build-arg PYTHON_VERSION to the base image's Python ($(ls /opt/torch/lib))" >&2; \
        exit 1; \
    fi \
 && /opt/torch/bin/pip install --no-cache-dir --no-compile --disable-pip-version-check \
        --index-url "$TORCH_INDEX_URL" \
        ${TORCH_EXTRA_INDEX_URL:+--extra-index-url "$TORCH_EXTRA_INDEX_URL"} \
        "torch==${TORCH_VERSION}" \
 && /opt/torch/bin/pip uninstall --yes --disable-pip-version-check triton \
 && version=$(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$site/torch/version.py") \
 && cuda=$(sed -n "s/^cuda: .* = '\(.*\)'/\1/p" "$site/torch/version.py") \
 && case "$version" in \
        "$TORCH_VERSION" | "$TORCH_VERSION"+*) ;; \
        *) echo "error: installed torch '$version', want $TORCH_VERSION" >&2; exit 1 ;; \
    esac \
 && case "$cuda" in \
        13.*) ;; \
        *) echo "error: torch $version is built for CUDA '${cuda:-none}', this image wants CUDA 13 (check TORCH_INDEX_URL)" >&2; exit 1 ;; \
    esac \
 && for dir in torch/lib nvidia/cu13/lib nvidia/cudnn/lib nvidia/nccl/lib nvidia/cusparselt/lib nvidia/nvshmem/lib; do \
        if [ ! -d "$site/$dir" ]; then echo "error: the torch wheel's layout changed: no $site/$dir" >&2; exit 1; fi; \
    done \
 && mkdir -p /opt/premem/nccl \
 && ln -s "$site/nvidia/nccl/lib/libnccl.so.2" /opt/premem/nccl/libnccl.so \
 && test -e /opt/premem/nccl/libnccl.so

# The binary must have been built against the same libtorch version.
RUN --mount=type=bind,from=builder,source=/src/.libtorch/torch/version.py,target=/opt/built-against.py \
    built=$(sed -n "s/^__version__ = '\([^'+]*\).*'/\1/p" /opt/built-against.py) \
 && if [ "$built" != "$TORCH_VERSION" ]; then \
        echo "error: premem is built against libtorch $built but TORCH_VERSION is $TORCH_VERSION; keep them (and tch) in lockstep" >&2; \
        exit 1; \
    fi

# libtorch's own libraries find their CUDA neighbours through their RPATH
# ($ORIGIN/../../nvidia/*/lib); the nvidia directories are listed as well for
# anything loaded by name later (cuDNN's sub-libraries, NVRTC). The last two
# entries are the base image's own LD_LIBRARY_PATH (driver libraries).
ENV TORCH_SITE_PACKAGES=/opt/torch/lib/python${PYTHON_VERSION}/site-packages
ENV LD_LIBRARY_PATH=/opt/premem/nccl:${TORCH_SITE_PACKAGES}/torch/lib:${TORCH_SITE_PACKAGES}/nvidia/cu13/lib:${TORCH_SITE_PACKAGES}/nvidia/cudnn/lib:${TORCH_SITE_PACKAGES}/nvidia/nccl/lib:${TORCH_SITE_PACKAGES}/nvidia/cusparselt/lib:${TORCH_SITE_PACKAGES}/nvidia/nvshmem/lib:/usr/local/nvidia/lib:/usr/local/nvidia/lib64

# A non-root user (uid/gid 10001, as the Helm chart's securityContext) and a
# writable working directory: `premem run` writes data/, premem-run/, runs/
# there. Specs name files relative to it (the built-in job of `premem run`
# reads examples/tiny-llama.json), hence the examples link.
RUN groupadd --gid 10001 premem \
 && useradd --uid 10001 --gid 10001 --home-dir /home/premem --create-home --shell /usr/sbin/nologin premem \
 && mkdir -p /workspace \
 && ln -s /opt/premem/examples /workspace/examples \
 && chown 10001:10001 /workspace

COPY --from=builder /out/premem /usr/local/bin/premem
COPY examples/ /opt/premem/examples/

ARG VERSION=unknown
ARG GIT_REVISION=unknown
ARG SOURCE_URL=https://github.com/OWNER/premem
LABEL org.opencontainers.image.title="premem" \
      org.opencontainers.image.description="Distributed LLM finetuning that measures pre-memorization train accuracy while it trains (CUDA 13 + CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.url="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${CUDA_IMAGE}"

# No HEALTHCHECK: under Kubernetes the chart's probes (the coordinator's gRPC
# port) decide readiness and liveness, and one image serves several roles.
USER 10001:10001
WORKDIR /workspace
ENTRYPOINT ["premem"]
CMD ["--help"]
