"""Greedy generation speed, lmforge vs transformers `generate`, on the same weights, one process.

    python bench/bench_generate.py [--preset gpt2-mini] [--prompt 64] [--new 256] [--batches 1,8]
                                   [--device cpu] [--no-uncached]
Both sides decode the same random prompts greedily with a KV cache (and, unless --no-uncached, without
one: every step re-runs the whole sequence); the generated tokens must be identical. Prints new tokens
per second (batch x new tokens / wall time) and the ratio. The HF model is random-initialised from our
config, saved, and loaded into lmforge through `lmforge.convert`, so the weights are the same tensors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
from _common import hf_model

from lmforge.config import ModelConfig
from lmforge.convert import load_hf
from lmforge.generate import GenerationConfig, generate

HEADS = {"lm": {"kind": "clm"}}


def timed(fn, sync) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    result = fn()
    sync()
    return time.perf_counter() - start, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="gpt2-mini")
    parser.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    parser.add_argument("--new", type=int, default=256, help="new tokens per prompt")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-uncached", action="store_true", help="skip the runs without a KV cache")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per side (best kept)")
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cfg = ModelConfig.from_name(args.preset)
    if args.prompt + args.new > cfg.max_position_embeddings:
        parser.error(f"--prompt + --new exceeds the preset's {cfg.max_position_embeddings} positions")
    torch.manual_seed(0)
    hf = hf_model(cfg, HEADS).eval()
    hf.generation_config.pad_token_id = 0
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = load_hf(tmp).eval()
    hf.to(device)
    ours.to(device)
    print(f"{args.preset} greedy, prompt {args.prompt} tokens, {args.new} new tokens, {torch.get_num_threads()} "
          f"threads, device {device}; new tokens/s (best of {args.repeat})")
    print("| batch | cache | transformers | lmforge | ratio | same tokens |")
    print("|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        gen = torch.Generator().manual_seed(batch)
        ids = torch.randint(1, cfg.vocab_size, (batch, args.prompt), generator=gen).to(device)
        mask = torch.ones_like(ids)
        for cache in (True, False) if not args.no_uncached else (True,):
            config = GenerationConfig(max_new_tokens=args.new, use_cache=cache)

            def run_hf(ids=ids, mask=mask, cache=cache):
                with torch.no_grad():
                    out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new,
                                      min_new_tokens=args.new, do_sample=False, use_cache=cache,
                                      eos_token_id=None, pad_token_id=0)
                return out[:, args.prompt:].tolist()

            def run_ours(ids=ids, mask=mask, config=config):
                return generate(ours, ids, mask, config).tokens

            run_hf(), run_ours()  # warm-up (allocator, kernels)
            hf_best, ours_best = float("inf"), float("inf")
            for _ in range(args.repeat):  # alternate sides so a slow patch of the machine hits both
                seconds, hf_tokens = timed(run_hf, sync)
                hf_best = min(hf_best, seconds)
                seconds, our_tokens = timed(run_ours, sync)
                ours_best = min(ours_best, seconds)
            total = batch * args.new
            print(f"| {batch} | {'yes' if cache else 'no'} | {total / hf_best:,.0f} | {total / ours_best:,.0f} | "
                  f"{hf_best / ours_best:.2f}x | {'yes' if hf_tokens == our_tokens else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
