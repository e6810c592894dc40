"""Shared pieces of the training-throughput benchmarks (bench_mlm, bench_clm, bench_gpu).

Both sides get the same synthetic batches, the same config (the peer's is built from ours with
lmforge.convert's config map, so no field can drift) and AdamW; warmup steps are not timed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.convert.hf_config import to_hf_config

Batch = dict[str, torch.Tensor]
IGNORE = -100
MLM_RATE = 0.15  # BERT §3.1


def hf_model(config: ModelConfig, heads: dict[str, dict]) -> nn.Module:
    """The transformers model with exactly our config (architecture from the heads: BertForMaskedLM,
    GPT2LMHeadModel, ...). transformers is imported here only: benchmarks and tests may use it."""
    import transformers
    from transformers import AutoConfig

    hf = dict(to_hf_config(config, heads))
    architecture = hf.pop("architectures")[0]
    hf_config = AutoConfig.for_model(hf.pop("model_type"), **hf)
    return getattr(transformers, architecture)(hf_config)


def mlm_batch(vocab: int, size: int, seq: int, gen: torch.Generator, mask_id: int = 4,
              first_id: int = 5) -> Batch:
    """Random ids with exactly round(15% x seq) predicted positions per row, all replaced by [MASK]:
    a fixed count keeps shapes static (torch.compile) and the FLOP count exact."""
    ids = torch.randint(first_id, vocab, (size, seq), generator=gen)
    count = max(1, round(MLM_RATE * seq))
    chosen = torch.rand(size, seq, generator=gen).argsort(dim=1)[:, :count]  # (B, count) positions
    labels = torch.full_like(ids, IGNORE)
    labels.scatter_(1, chosen, ids.gather(1, chosen))
    ids.scatter_(1, chosen, mask_id)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def clm_batch(vocab: int, size: int, seq: int, gen: torch.Generator) -> Batch:
    """Full-length rows (packed CLM blocks): the labels are the inputs (both models shift inside)."""
    ids = torch.randint(0, vocab, (size, seq), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def train_step(loss_fn: Callable[[Batch], torch.Tensor], optimizer: torch.optim.Optimizer,
               autocast: Callable[[], object] | None = None) -> Callable[[Batch], None]:
    """forward + backward + AdamW step, optionally under an autocast context factory."""

    def step(batch: Batch) -> None:
        if autocast is None:
            loss = loss_fn(batch)
        else:
            with autocast():
                loss = loss_fn(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def throughput(step: Callable[[Batch], None], data: list[Batch], steps: int, warmup: int = 2,
               sync: Callable[[], None] = lambda: None) -> float:
    """Tokens per second over `steps` timed steps after `warmup` untimed ones (allocator, autotuning,
    compilation). `sync` waits for queued device work (torch.cuda.synchronize) around the timing."""
    if len(data) < warmup + steps:
        raise ValueError(f"need {warmup + steps} batches, got {len(data)}")
    for batch in data[:warmup]:
        step(batch)
    sync()
    start = time.perf_counter()
    for batch in data[warmup:warmup + steps]:
        step(batch)
    sync()
    return sum(b["input_ids"].numel() for b in data[warmup:warmup + steps]) / (time.perf_counter() - start)
