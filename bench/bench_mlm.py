"""MLM training throughput, lmforge vs transformers BertForMaskedLM, same config/batch, one process.

    python bench/bench_mlm.py [--steps 20] [--batch 32] [--seq 128] [--preset bert-mini]
Prints tokens/s of both and the ratio (ours / HF). CPU by default; the lead runs the final numbers.
"""

from __future__ import annotations

import argparse
import time

import torch

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.train.optim import build_optimizer


def batch(vocab: int, size: int, seq: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (size, seq), generator=gen)
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(size, seq, generator=gen) < 0.15  # BERT §3.1 masking rate
    labels[chosen] = ids[chosen]
    ids[chosen] = 4
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def throughput(step, data, steps: int, warmup: int = 2) -> float:
    for b in data[:warmup]:
        step(b)
    start = time.perf_counter()
    for b in data[warmup:warmup + steps]:
        step(b)
    return sum(b["input_ids"].numel() for b in data[warmup:warmup + steps]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="bert-mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    from transformers import BertConfig, BertForMaskedLM

    cfg = ModelConfig.from_name(args.preset)
    gen = torch.Generator().manual_seed(0)
    data = [batch(cfg.vocab_size, args.batch, args.seq, gen) for _ in range(args.steps + 2)]

    ours = TaskModel(cfg, {"mlm": {"kind": "mlm"}}).train()
    opt = build_optimizer(ours, 1e-4)

    def ours_step(b):
        out = ours(b["input_ids"], b["attention_mask"], mlm_labels=b["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    hf = BertForMaskedLM(BertConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                                    num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                                    intermediate_size=cfg.intermediate_size)).train()
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4)

    def hf_step(b):
        hf(**b).loss.backward()
        hf_opt.step()
        hf_opt.zero_grad(set_to_none=True)

    hf_tps = throughput(hf_step, data, args.steps)
    ours_tps = throughput(ours_step, data, args.steps)
    print(f"{args.preset} MLM seq {args.seq} batch {args.batch} ({torch.get_num_threads()} threads): "
          f"transformers {hf_tps:,.0f} tok/s, lmforge {ours_tps:,.0f} tok/s, ratio {ours_tps / hf_tps:.2f}x")


if __name__ == "__main__":
    main()
