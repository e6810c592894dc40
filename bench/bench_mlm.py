"""MLM training throughput, lmforge vs transformers BertForMaskedLM, same config/batch, one process.

    python bench/bench_mlm.py [--steps 20] [--batch 32] [--seq 128] [--preset bert-mini]
Prints tokens/s of both and the ratio (ours / HF). CPU by default; the lead runs the final numbers.
"""

from __future__ import annotations

import argparse

import torch
from _common import hf_model, mlm_batch, throughput, train_step

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.train.optim import build_optimizer

HEADS = {"mlm": {"kind": "mlm"}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="bert-mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()

    cfg = ModelConfig.from_name(args.preset)
    gen = torch.Generator().manual_seed(0)
    data = [mlm_batch(cfg.vocab_size, args.batch, args.seq, gen) for _ in range(args.warmup + args.steps)]

    ours = TaskModel(cfg, HEADS).train()  # masked-positions-only head, fused qkv, SDPA
    ours_step = train_step(lambda b: ours(b["input_ids"], b["attention_mask"], mlm_labels=b["labels"]).loss,
                           build_optimizer(ours, 1e-4))
    hf = hf_model(cfg, HEADS).train()
    hf_step = train_step(lambda b: hf(**b).loss, torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True))  # as HF Trainer on torch >= 2.8

    hf_tps = throughput(hf_step, data, args.steps, args.warmup)
    ours_tps = throughput(ours_step, data, args.steps, args.warmup)
    print(f"{args.preset} MLM seq {args.seq} batch {args.batch} ({torch.get_num_threads()} threads, "
          f"{args.steps} timed steps): transformers {hf_tps:,.0f} tok/s, lmforge {ours_tps:,.0f} tok/s, "
          f"ratio {ours_tps / hf_tps:.2f}x")


if __name__ == "__main__":
    main()
