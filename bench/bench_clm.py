"""CLM training throughput, lmforge vs transformers GPT2LMHeadModel, same config/batch, one process.

    python bench/bench_clm.py [--steps 20] [--batch 32] [--seq 128] [--preset gpt2-mini]
Prints tokens/s of both and the ratio (ours / HF; target >= 1.3x on CPU). The lead runs the final
numbers; check changes with a few steps only.
"""

from __future__ import annotations

import argparse

import torch
from _common import clm_batch, hf_model, throughput, train_step

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.train.optim import build_optimizer

HEADS = {"lm": {"kind": "clm"}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="gpt2-mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()

    cfg = ModelConfig.from_name(args.preset)
    if not cfg.causal:
        parser.error(f"--preset {args.preset} is not a causal (GPT) preset")
    if args.seq > cfg.max_position_embeddings:
        parser.error(f"--seq {args.seq} exceeds the preset's {cfg.max_position_embeddings} positions")
    gen = torch.Generator().manual_seed(0)
    data = [clm_batch(cfg.vocab_size, args.batch, args.seq, gen) for _ in range(args.warmup + args.steps)]

    ours = TaskModel(cfg, HEADS).train()
    ours_step = train_step(lambda b: ours(b["input_ids"], b["attention_mask"], lm_labels=b["labels"]).loss,
                           build_optimizer(ours, 1e-4))
    hf = hf_model(cfg, HEADS).train()
    hf_step = train_step(lambda b: hf(**b).loss, torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True))  # as HF Trainer on torch >= 2.8

    hf_tps = throughput(hf_step, data, args.steps, args.warmup)
    ours_tps = throughput(ours_step, data, args.steps, args.warmup)
    print(f"{args.preset} CLM seq {args.seq} batch {args.batch} ({torch.get_num_threads()} threads, "
          f"{args.steps} timed steps): transformers {hf_tps:,.0f} tok/s, lmforge {ours_tps:,.0f} tok/s, "
          f"ratio {ours_tps / hf_tps:.2f}x")


if __name__ == "__main__":
    main()
