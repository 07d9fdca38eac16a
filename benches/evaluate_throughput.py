#!/usr/bin/env python3
"""The evaluator's per-task work: premem vs transformers, on one checkpoint.

The work: for each example, K samples (temperature, top-p, at most N new
tokens, stopped at the template's stop string or EOS) and the perplexity of
its target trace (one teacher-forced forward). premem runs it through
`premem bench evaluate` (the evaluator's own code: continuous batching, or
`--sampler static` for the loop it replaced); transformers runs the same
prompts with `generate(num_return_sequences=K, stop_strings=...)` on
left-padded batches of --batch-size prompts plus one forward per batch over
prompt + target. Both time a pass after --warmup untimed passes and count
generated tokens the same way (up to and including the stop), and
report the fastest of --repeat timed passes. Prints
examples/s and generated tokens/s for each and the ratios.

  python3 benches/evaluate_throughput.py --premem target/release/premem \\
      --checkpoint runs/synth-cluster/checkpoints/step-00000768 \\
      --data data/synth/train.jsonl --examples 64 --samples 5 --device cpu

On CUDA, --bandwidth-gbs (the device's memory bandwidth) adds each side's
fraction of the decoding roofline: every step reads the weights once.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def run_premem(args, sampler, work_out):
    out = os.path.join(tempfile.mkdtemp(prefix="premem-bench-"), "rows.parquet")
    cmd = [
        args.premem, "bench", "evaluate",
        "--checkpoint", args.checkpoint, "--data", args.data,
        "--limit", str(args.examples), "--samples", str(args.samples),
        "--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens),
        "--temperature", str(args.temperature), "--top-p", str(args.top_p),
        "--device", args.device, "--dtype", {"fp32": "f32", "bf16": "bf16"}[args.dtype], "--warmup", str(args.warmup),
        "--repeat", str(args.repeat), "--sampler", sampler, "--out", out,
    ]
    if work_out:
        cmd += ["--work-out", work_out]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def transformers_pass(model, tok, work, device):
    """One pass of the work; returns generated tokens."""
    import torch

    pad, eos = work["pad"], work["eos"]
    k = work["samples"]
    greedy = work["temperature"] == 0.0
    tokens = 0
    examples = work["examples"]
    for start in range(0, len(examples), work["batch_size"]):
        batch = examples[start:start + work["batch_size"]]
        prompts = [tok(e["prompt"])["input_ids"] for e in batch]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=mask, do_sample=not greedy,
                temperature=None if greedy else work["temperature"],
                top_p=None if greedy else work["top_p"], top_k=None,
                max_new_tokens=work["max_new_tokens"], num_return_sequences=k,
                stop_strings=work["stop"], tokenizer=tok, pad_token_id=pad, eos_token_id=eos,
            )
            tokens += int((out[:, width:] != pad).sum())
            targets = [p + tok(e["completion"], add_special_tokens=False)["input_ids"] + [eos]
                       for p, e in zip(prompts, batch)]
            longest = max(len(t) for t in targets)
            ids = torch.tensor([t + [pad] * (longest - len(t)) for t in targets], device=device)
            mask = torch.tensor([[1] * len(t) + [0] * (longest - len(t)) for t in targets], device=device)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            labels = ids[:, 1:].clone()
            for row, (p, t) in enumerate(zip(prompts, targets)):
                labels[row, : len(p) - 1] = -100
                labels[row, len(t) - 1:] = -100
            torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                ignore_index=-100, reduction="none")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return tokens


def run_transformers(args, work_path):
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    with open(work_path) as f:
        work = json.load(f)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(
        args.checkpoint, dtype=dtype, attn_implementation="sdpa").to(device).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(args.checkpoint, "tokenizer.json"))
    torch.manual_seed(0)
    for _ in range(args.warmup):
        transformers_pass(model, tok, work, device)
    passes = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        tokens = transformers_pass(model, tok, work, device)
        passes.append(time.perf_counter() - started)
    seconds = min(passes)
    n = len(work["examples"])
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"examples": n, "seconds": seconds, "examples_per_s": n / seconds,
            "generated_tokens": tokens, "tokens_per_s": tokens / seconds, "weight_bytes": params, "passes": passes}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--premem", required=True)
    p.add_argument("--checkpoint", required=True, help="a model directory with tokenizer.json")
    p.add_argument("--data", required=True, help="the dataset file (gsm8k format)")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--samples", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3,
                   help="timed passes per side; the fastest counts (the machine's noise is one-sided)")
    p.add_argument("--samplers", default="continuous,static",
                   help="premem samplers to run (comma-separated)")
    p.add_argument("--bandwidth-gbs", type=float, help="memory bandwidth, for the roofline fraction")
    args = p.parse_args()

    work_path = os.path.join(tempfile.mkdtemp(prefix="premem-bench-"), "work.json")
    results = {}
    for i, sampler in enumerate(args.samplers.split(",")):
        results[f"premem {sampler}"] = run_premem(args, sampler, work_path if i == 0 else None)
    results["transformers"] = run_transformers(args, work_path)
    ref = results["transformers"]
    print(f"{'':22} {'examples/s':>11} {'gen tok/s':>10} {'gen tokens':>11} {'ratio ex/s':>11}")
    for name, r in results.items():
        ratio = r["examples_per_s"] / ref["examples_per_s"]
        print(f"{name:22} {r['examples_per_s']:11.3f} {r['tokens_per_s']:10.1f} "
              f"{r['generated_tokens']:11.0f} {ratio:11.3f}")
    if args.bandwidth_gbs:
        # Decoding reads every weight once per step: tokens/s x weight bytes
        # / batch rows is the bandwidth used by the weights alone.
        rows = args.batch_size * args.samples
        for name, r in results.items():
            used = r["tokens_per_s"] / rows * ref["weight_bytes"]
            print(f"{name}: {100 * used / (args.bandwidth_gbs * 1e9):.2f} % of the weight-read roofline")
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
