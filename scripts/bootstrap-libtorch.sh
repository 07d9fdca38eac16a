#!/usr/bin/env bash
# Installs the pinned libtorch (from the PyPI torch wheel) and the two small CUDA
# wheels that libtorch_cpu.so needs at load time into a project-local directory.
# A no-op when that directory already holds the pinned versions.
#
#   scripts/bootstrap-libtorch.sh [DIR]      (default: .libtorch next to this script's repo)
#
# tch 0.24 binds libtorch 2.11.0: keep TORCH_VERSION and the tch version in lockstep.
set -euo pipefail

TORCH_VERSION=2.11.0
CUDA_RUNTIME_VERSION=13.0.96
CUPTI_VERSION=13.0.85

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest=${1:-"$repo/.libtorch"}
stamp="$dest/.premem-libtorch"
want="torch=$TORCH_VERSION cuda-runtime=$CUDA_RUNTIME_VERSION cupti=$CUPTI_VERSION"

verify() {
    local missing=()
    for f in torch/lib/libtorch_cpu.so torch/lib/libc10.so torch/lib/libtorch.so \
             torch/include/torch/csrc/api/include/torch/torch.h \
             nvidia/cu13/lib/libcudart.so.13 nvidia/cu13/lib/libcupti.so.13; do
        [ -e "$dest/$f" ] || missing+=("$f")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "bootstrap-libtorch: $dest is incomplete, missing: ${missing[*]}" >&2
        return 1
    fi
    local version
    version=$(sed -n "s/^__version__ = '\([^'+]*\).*'/\1/p" "$dest/torch/version.py")
    if [ "$version" != "$TORCH_VERSION" ]; then
        echo "bootstrap-libtorch: $dest/torch/version.py says torch '$version', want $TORCH_VERSION" >&2
        return 1
    fi
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && verify 2>/dev/null; then
    exit 0
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    echo "bootstrap-libtorch: '$python' not found; it is needed once, to fetch the torch wheel from PyPI (set PYTHON to another interpreter)" >&2
    exit 1
fi

echo "bootstrap-libtorch: installing $want into $dest (about 1.3 GB on disk)"
rm -rf "$dest.partial"
"$python" -m pip install --quiet --no-deps --no-compile --disable-pip-version-check --root-user-action=ignore \
    --target "$dest.partial" \
    "torch==$TORCH_VERSION" \
    "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" \
    "nvidia-cuda-cupti==$CUPTI_VERSION"
rm -rf "$dest"
mv "$dest.partial" "$dest"
verify
echo "$want" > "$stamp"
echo "bootstrap-libtorch: ok ($dest/torch)"
