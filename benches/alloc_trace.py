#!/usr/bin/env python3
"""Memory the kernel maps per training step: premem vs PyTorch + transformers.

Runs each side of benches/train_throughput.py under strace twice, with
--steps N and --steps 2N, and prints per step (the difference over N steps,
so start-up and warm-up cancel): anonymous mmap calls and bytes, munmap
calls, brk calls, and minor page faults. Large host buffers that glibc maps
and unmaps each step show up here; buffers reused from the heap do not.

  python3 benches/alloc_trace.py --premem target/release/premem \\
      --config benches/llama-124m.json --batch 2 --seq 256 --steps 3
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
MMAP = re.compile(r"mmap\(NULL, (\d+), [^,]+, [^,]*MAP_ANONYMOUS")


def traced(cmd: list) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as log:
        full = ["strace", "-f", "-qq", "-e", "trace=mmap,munmap,brk", "-o", log.name] + cmd
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"{cmd[0]} failed under strace")
        counts = {"mmap": 0, "mmap_bytes": 0, "munmap": 0, "brk": 0}
        for line in log:
            if (m := MMAP.search(line)) is not None:
                counts["mmap"] += 1
                counts["mmap_bytes"] += int(m.group(1))
            elif "munmap(" in line:
                counts["munmap"] += 1
            elif "brk(" in line:
                counts["brk"] += 1
        counts["minor_faults"] = usage.ru_minflt
        return counts


def side_command(args, side: str, steps: int) -> list:
    common = ["--config", args.config, "--batch", str(args.batch), "--seq", str(args.seq),
              "--device", "cpu", "--dtype", "fp32", "--warmup", "1", "--steps", str(steps)]
    if side == "premem":
        return [args.premem, "bench", "train", "--config", args.config, "--batch-size", str(args.batch),
                "--micro-batch-size", str(args.batch), "--seq-len", str(args.seq), "--warmup-steps", "1",
                "--steps", str(steps), "--device", "cpu", "--dtype", "f32"]
    return [sys.executable, os.path.join(HERE, "train_throughput.py"), "--torch-child"] + common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--premem", default="target/release/premem")
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3, help="N: the runs take N and 2N steps")
    args = ap.parse_args()
    print(f"per training step, {args.config}, batch {args.batch} x seq {args.seq}, fp32 on the CPU")
    print(f"{'':8} {'mmap':>8} {'mmap MB':>10} {'munmap':>8} {'brk':>8} {'faults':>10}")
    for side in ("premem", "pytorch"):
        short = traced(side_command(args, side, args.steps))
        long = traced(side_command(args, side, 2 * args.steps))
        d = {k: (long[k] - short[k]) / args.steps for k in short}
        print(f"{side:8} {d['mmap']:8.1f} {d['mmap_bytes'] / 1e6:10.1f} {d['munmap']:8.1f} "
              f"{d['brk']:8.1f} {d['minor_faults']:10.0f}")


if __name__ == "__main__":
    main()
