#!/usr/bin/env bash
# Every GPU check, in one run on a GPU host (benches/README.md, "GPU check";
# each issue with a GPU acceptance point adds its checks here). Stage here:
#
#   scripts/gpu-check.sh --stage        # cargo build --release, copy into .gpu/
#
# then on the GPU host, from the repository root (with .gpu/ carried along):
#
#   scripts/gpu-check.sh                # all checks, results under ${OUT:-gpu-out}
#
# The host needs python3 with torch 2.11 and transformers (the reference
# side), nvidia-smi, and no Rust toolchain: premem runs from .gpu/, linked
# against the host's own libtorch (torch's lib/) and NCCL (torch's
# nvidia/nccl/lib). CHECK_DEVICE=cpu runs the same script on a CPU host with
# the tiny config, to test the script itself.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
stage="$repo/.gpu"

if [ "${1:-}" = "--stage" ]; then
    set -e
    cargo build --release --bin premem
    mkdir -p "$stage"
    cp target/release/premem "$stage/premem"
    grep -qx '/.gpu' .git/info/exclude 2>/dev/null || echo '/.gpu' >> .git/info/exclude
    echo "staged $stage/premem; carry .gpu to the GPU host"
    exit 0
fi

out=${OUT:-gpu-out}
device=${CHECK_DEVICE:-cuda}
mkdir -p "$out"
python=${PYTHON:-python3}
[ -x "$stage/premem" ] || { echo "gpu-check: $stage/premem is missing: run scripts/gpu-check.sh --stage here first" >&2; exit 1; }

torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))') ||
    { echo "gpu-check: '$python' cannot import torch" >&2; exit 1; }
nccl="$stage/nccl-lib"
mkdir -p "$nccl"
nccl_so=$(ls "$torch_dir"/../nvidia/nccl/lib/libnccl.so* 2>/dev/null | head -n 1)
[ -n "$nccl_so" ] && ln -sf "$(readlink -f "$nccl_so")" "$nccl/libnccl.so"
export LD_LIBRARY_PATH="$torch_dir/lib:$nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
premem="$stage/premem"

failures=0
# check NAME SECONDS COMMAND...: runs one check under a time limit, its output
# in $out/NAME.log, and counts it failed on a non-zero exit.
check() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    if timeout "$limit" "$@" > "$out/$name.log" 2>&1; then
        tail -n 20 "$out/$name.log"
    else
        echo "!! $name failed (exit $?); last lines:"
        tail -n 20 "$out/$name.log"
        failures=$((failures + 1))
    fi
}

check doctor 60 "$premem" doctor

# Issue 16: the training step against PyTorch + transformers, bf16, with MFU
# (H200 dense bf16 peak: 989 TFLOP/s) and peak GPU memory of both sides.
if [ "$device" = cuda ]; then
    dtype=bf16 peak=989
    train_sizes="llama-0.5b:8:1024 llama-1b:4:1024"
else
    dtype=fp32 peak=0
    train_sizes="llama-tiny:2:64"
fi
for size in $train_sizes; do
    IFS=: read -r config batch seq <<< "$size"
    check "train-$config" 300 "$python" benches/train_throughput.py --premem "$premem" \
        --config "benches/$config.json" --batch "$batch" --seq "$seq" --device "$device" \
        --dtype "$dtype" --warmup 3 --steps 10 --peak-tflops "$peak" --stages
done

# Issue 17: zero1/zero2 take their code paths at world size 1 and agree with
# none on the device; the 1B run above prints the memory plan beside the
# measured peak GPU memory (acceptance: within 15 %).
if [ "$device" = cuda ]; then small=llama-0.5b; else small=llama-tiny; fi
for sharding in none zero1 zero2; do
    check "shard-$sharding" 300 "$premem" bench train --config "benches/$small.json" --batch-size 4 \
        --micro-batch-size 2 --seq-len 256 --warmup-steps 0 --steps 3 --device "$device" --sharding "$sharding"
done
check shard-agree 30 "$python" -c '
import json, sys
loss = {s: json.loads(open(f"'"$out"'/shard-{s}.log").read().strip().splitlines()[-1])["final_loss"] for s in ("none", "zero1", "zero2")}
print(loss)
sys.exit(0 if all(abs(v - loss["none"]) <= 1e-4 * abs(loss["none"]) for v in loss.values()) else 1)'

# Issue 21: the continuous sampler against transformers `generate`, 64
# prompts x K=8, 256 new tokens, with the roofline fraction (H200: 4.8 TB/s).
if [ "$device" = cuda ]; then
    check sample-llama-0.5b 300 "$python" benches/sample_throughput.py --premem "$premem" \
        --config benches/llama-0.5b.json --prompts 64 --samples 8 --new-tokens 256 \
        --device cuda --dtype bf16 --bandwidth-gbs 4800
else
    check sample-llama-tiny 120 "$python" benches/sample_throughput.py --premem "$premem" \
        --config benches/llama-tiny.json --prompts 8 --samples 4 --prompt-len 32 --new-tokens 32 \
        --device cpu --dtype fp32
fi

echo "gpu-check: $failures check(s) failed; logs in $out/"
[ "$failures" -eq 0 ]
