#!/usr/bin/env python3
"""Sampling throughput: premem vs transformers `generate`.

Both sample from the same randomly initialised Llama config: P random
prompts x K samples each, temperature and top-p, a fixed number of new tokens
(no early stop), KV cache. The script prints sampled tokens/s of both and the
ratio (premem / transformers).

  python3 benches/sample_throughput.py --premem target/release/premem \
      --config benches/llama-0.5b.json --prompts 64 --samples 8 --new-tokens 256 \
      --device cuda --dtype bf16

transformers side: `model.generate(do_sample=True, num_return_sequences=K,
min_new_tokens=N, max_new_tokens=N)` in one call over all prompts (its usual
batched use), SDPA attention. premem side: `premem bench sample`, which
prefills each prompt once and shares its cache among the K samples.
"""

import argparse
import json
import subprocess
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM


def transformers_run(args) -> float:
    config = AutoConfig.from_pretrained(args.config)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype).to(device).eval()
    ids = torch.randint(config.vocab_size, (args.prompts, args.prompt_len), device=device)
    mask = torch.ones_like(ids)

    def run():
        with torch.no_grad():
            return model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=args.temperature,
                top_p=args.top_p,
                num_return_sequences=args.samples,
                min_new_tokens=args.new_tokens,
                max_new_tokens=args.new_tokens,
                pad_token_id=0,
            )

    for _ in range(args.warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    sampled = (out.shape[1] - args.prompt_len) * out.shape[0]
    return sampled / seconds


def premem_run(args) -> dict:
    dtype = {"bf16": "bf16", "fp32": "f32"}[args.dtype]
    cmd = [
        args.premem, "bench", "sample", "--config", args.config,
        "--prompts", str(args.prompts), "--samples", str(args.samples),
        "--prompt-len", str(args.prompt_len), "--max-new-tokens", str(args.new_tokens),
        "--temperature", str(args.temperature), "--top-p", str(args.top_p),
        "--warmup", str(args.warmup), "--device", args.device, "--dtype", dtype,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--premem", default="target/release/premem")
    ap.add_argument("--config", required=True)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--bandwidth-gbs", type=float,
                    help="the device's memory bandwidth (H200: 4800), for the roofline fraction")
    args = ap.parse_args()

    p = premem_run(args)
    t = transformers_run(args)
    print(f"config {args.config}: {p['parameters'] / 1e6:.1f}M parameters, {args.prompts} prompts x K={args.samples}, "
          f"{args.prompt_len} prompt + {args.new_tokens} new tokens, {args.dtype} on {args.device}")
    print(f"premem        {p['tokens_per_s']:12.0f} sampled tokens/s")
    print(f"transformers  {t:12.0f} sampled tokens/s")
    print(f"ratio premem/transformers = {p['tokens_per_s'] / t:.3f}")
    if args.bandwidth_gbs:
        # Each decoding step reads every weight once for all rows in flight:
        # the weights alone need (tokens/s / rows) x weight bytes of bandwidth
        # (a lower bound of what a step moves; the KV reads come on top).
        weight_bytes = p["parameters"] * (2 if args.dtype == "bf16" else 4)
        rows = args.prompts * args.samples
        for name, rate in (("premem", p["tokens_per_s"]), ("transformers", t)):
            used = rate / rows * weight_bytes / (args.bandwidth_gbs * 1e9)
            print(f"{name}: {100 * used:.2f} % of the memory-bandwidth roofline (weight reads)")


if __name__ == "__main__":
    main()
