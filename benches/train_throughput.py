#!/usr/bin/env python3
"""Training throughput: premem vs a plain PyTorch + transformers loop.

Both train the same randomly initialised Llama config on random tokens with
the same batch, sequence length and precision, AdamW and gradient clipping, and
report tokens/s after warm-up. The script prints both and their ratio
(premem / PyTorch), plus MFU when --peak-tflops is given.

  python3 benches/train_throughput.py --premem target/release/premem \
      --config benches/llama-0.5b.json --batch 8 --seq 1024 --device cuda --dtype bf16

PyTorch side: fp32 weights with bf16 autocast (the usual mixed precision),
SDPA attention, fused AdamW on CUDA. premem side: bf16 weights with fp32
master weights and moments. Both do the same matmuls in bf16.
"""

import argparse
import json
import subprocess
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def torch_loop(args) -> float:
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

    def step():
        for chunk in ids.split(micro):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(input_ids=chunk, labels=chunk).loss
            (loss * chunk.shape[0] / args.batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    return args.batch * args.seq / seconds


def premem_run(args) -> dict:
    dtype = {"bf16": "bf16", "fp32": "f32"}[args.dtype]
    cmd = [
        args.premem, "bench", "train", "--config", args.config,
        "--batch-size", str(args.batch), "--micro-batch-size", str(args.micro_batch or args.batch),
        "--seq-len", str(args.seq), "--warmup-steps", str(args.warmup), "--steps", str(args.steps),
        "--device", args.device, "--dtype", dtype,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    args = ap.parse_args()

    p = premem_run(args)
    t = torch_loop(args)
    ratio = p["tokens_per_s"] / t
    print(f"config {args.config}: {p['parameters'] / 1e6:.1f}M parameters, batch {args.batch} x seq {args.seq}, {args.dtype} on {args.device}")
    print(f"premem   {p['tokens_per_s']:12.0f} tokens/s")
    print(f"pytorch  {t:12.0f} tokens/s")
    print(f"ratio premem/pytorch = {ratio:.3f}")
    if args.peak_tflops > 0:
        flops = 6 * p["parameters"]
        print(f"MFU premem {flops * p['tokens_per_s'] / (args.peak_tflops * 1e12):.1%}, pytorch {flops * t / (args.peak_tflops * 1e12):.1%}")


if __name__ == "__main__":
    main()
