#!/usr/bin/env python3
"""Training throughput and memory: premem vs a plain PyTorch + transformers loop.

Both train the same randomly initialised Llama config on random tokens with
the same batch, sequence length and precision, AdamW and gradient clipping, and
report tokens/s after warm-up. Each side runs in its own child process, and
the script prints tokens/s, peak memory (peak RSS on the CPU, the most GPU
memory the process held on CUDA, both read the same way for both sides) and
premem/PyTorch, plus MFU when --peak-tflops is given. --stages adds the time
of each stage of a step (device synchronised between stages).

  python3 benches/train_throughput.py --premem target/release/premem \
      --config benches/llama-0.5b.json --batch 8 --seq 1024 --device cuda --dtype bf16

PyTorch side: fp32 weights with bf16 autocast (the usual mixed precision),
SDPA attention, fused AdamW on CUDA. premem side: bf16 weights with fp32
master weights and moments. Both do the same matmuls in bf16.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

STAGES = ["forward", "loss", "backward", "gather", "all_reduce", "clip", "update"]


def torch_child(args) -> dict:
    """The PyTorch + transformers loop (runs in the child process)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(args.config)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(device)
    model.train()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, fused=fused)
    ids = torch.randint(config.vocab_size, (args.batch, args.seq), device=device)
    use_bf16 = args.dtype == "bf16"
    micro = args.micro_batch or args.batch
    stages = dict.fromkeys(STAGES, 0.0)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def mark(stage, since):
        if args.stages:
            sync()
            now = time.perf_counter()
            stages[stage] += now - since
            return now
        return since

    def step():
        t = time.perf_counter()
        for chunk in ids.split(micro):
            # What `model(input_ids=chunk, labels=chunk)` does, in two stages.
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(input_ids=chunk).logits
                t = mark("forward", t)
                loss = model.loss_function(logits=logits, labels=chunk, vocab_size=config.vocab_size)
                t = mark("loss", t)
            (loss * chunk.shape[0] / args.batch).backward()
            del logits, loss
            t = mark("backward", t)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        t = mark("clip", t)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mark("update", t)

    for _ in range(args.warmup):
        step()
    sync()
    stages = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    parameters = sum(p.numel() for p in model.parameters())
    result = {"parameters": parameters, "tokens_per_s": args.batch * args.seq / seconds}
    if args.stages:
        result["stages"] = {k: v / args.steps for k, v in stages.items()}
    return result


def premem_command(args) -> list:
    dtype = {"bf16": "bf16", "fp32": "f32"}[args.dtype]
    cmd = [
        args.premem, "bench", "train", "--config", args.config,
        "--batch-size", str(args.batch), "--micro-batch-size", str(args.micro_batch or args.batch),
        "--seq-len", str(args.seq), "--warmup-steps", str(args.warmup), "--steps", str(args.steps),
        "--device", args.device, "--dtype", dtype,
    ]
    return cmd + (["--stages"] if args.stages else [])


def torch_command(args) -> list:
    return [sys.executable, os.path.abspath(__file__), "--torch-child"] + sys.argv[1:]


def gpu_memory_mib(pid: int) -> int:
    """GPU memory the process holds now, as nvidia-smi reports it (0 if none)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=False,
    ).stdout
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid):
            return int(fields[1])
    return 0


def run_child(cmd: list, device: str) -> dict:
    """Runs one side; its JSON line plus peak RSS (and GPU memory on CUDA)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_gpu = [0]
    done = threading.Event()

    def poll():
        while not done.wait(0.2):
            peak_gpu[0] = max(peak_gpu[0], gpu_memory_mib(proc.pid))

    watcher = threading.Thread(target=poll, daemon=True)
    if device.startswith("cuda"):
        watcher.start()
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed with exit status {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    result["minor_faults"] = usage.ru_minflt
    result["system_s"] = usage.ru_stime
    result["peak_gpu_mib"] = peak_gpu[0]
    return result


def report(args, p: dict, t: dict) -> None:
    ratio = p["tokens_per_s"] / t["tokens_per_s"]
    print(f"config {args.config}: {p['parameters'] / 1e6:.1f}M parameters, batch {args.batch} x seq {args.seq}, {args.dtype} on {args.device}")
    for name, r in (("premem", p), ("pytorch", t)):
        gpu = f", peak GPU {r['peak_gpu_mib']} MiB" if args.device.startswith("cuda") else ""
        print(f"{name:8} {r['tokens_per_s']:12.1f} tokens/s, peak RSS {r['peak_rss_mb']:8.0f} MB{gpu}, "
              f"{r['minor_faults']} minor faults, {r['system_s']:.1f} s system")
    print(f"ratio premem/pytorch = {ratio:.3f}")
    print(f"peak RSS premem/pytorch = {p['peak_rss_mb'] / t['peak_rss_mb']:.3f}")
    if args.device.startswith("cuda") and t["peak_gpu_mib"]:
        print(f"peak GPU memory premem/pytorch = {p['peak_gpu_mib'] / t['peak_gpu_mib']:.3f}")
    if p.get("planned_rank_bytes"):
        planned = p["planned_rank_bytes"] / 2**30
        if args.device.startswith("cuda"):
            measured, what = p["peak_gpu_mib"] / 1024, "peak GPU memory"
        else:
            measured, what = p["peak_rss_mb"] * 1e6 / 2**30, "peak RSS (with the process's fixed cost)"
        print(f"memory plan {planned:.2f} GiB, premem {what} {measured:.2f} GiB (measured/plan = {measured / planned:.3f})")
    if args.peak_tflops > 0:
        flops = 6 * p["parameters"]
        print(f"MFU premem {flops * p['tokens_per_s'] / (args.peak_tflops * 1e12):.1%}, "
              f"pytorch {flops * t['tokens_per_s'] / (args.peak_tflops * 1e12):.1%}")
    if args.stages:
        print(f"{'stage (ms/step)':16} {'premem':>10} {'pytorch':>10}")
        for stage in STAGES:
            print(f"{stage:16} {p['stages'][stage] * 1e3:10.1f} {t['stages'][stage] * 1e3:10.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--premem", default="target/release/premem")
    ap.add_argument("--config", required=True, help="a Hugging Face config.json (Llama family)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=0, help="0: no gradient accumulation")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="dense peak of the device, for MFU")
    ap.add_argument("--stages", action="store_true", help="time each stage of a step (synchronised)")
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.torch_child:
        print(json.dumps(torch_child(args)))
        return
    p = run_child(premem_command(args), args.device)
    t = run_child(torch_command(args), args.device)
    report(args, p, t)


if __name__ == "__main__":
    main()
