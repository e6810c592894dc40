"""Shared pieces of the training-throughput benchmarks (bench_mlm, bench_clm, bench_gpu).

Both sides get the same synthetic batches, the same config (the peer's is built from ours with
lmforge.convert's config map, so no field can drift) and AdamW; warmup steps are not timed.
"""

from __future__ import annotations

import functools
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


def interleaved_throughput(steps_by_name: dict[str, Callable[[Batch], None]], data: list[Batch], steps: int,
                           warmup: int = 2, rounds: int = 4) -> dict[str, float]:
    """Tokens per second of each side, timed in alternating rounds over the same batches, so that a
    slow patch of a shared machine (another process, clock changes) falls on both sides alike."""
    if len(data) < warmup + steps:
        raise ValueError(f"need {warmup + steps} batches, got {len(data)}")
    for step in steps_by_name.values():
        for batch in data[:warmup]:
            step(batch)
    timed = data[warmup:warmup + steps]
    seconds = dict.fromkeys(steps_by_name, 0.0)
    for r in range(rounds):
        part = timed[r * len(timed) // rounds:(r + 1) * len(timed) // rounds]
        for name, step in steps_by_name.items():
            start = time.perf_counter()
            for batch in part:
                step(batch)
            seconds[name] += time.perf_counter() - start
    tokens = sum(b["input_ids"].numel() for b in timed)
    return {name: tokens / s for name, s in seconds.items()}


def compare_training(objective: str, default_preset: str, heads: dict[str, dict], label_key: str,
                     make_batch: Callable[..., Batch], need_causal: bool) -> None:
    """The CPU training-throughput comparison shared by bench_mlm and bench_clm: same config, same
    batches, fused AdamW on both sides (as HF Trainer on torch >= 2.8), timed in alternating rounds;
    prints both tok/s and the ratio. `--precision bf16` runs both sides under the bf16 autocast that
    lmforge's trainer uses (fp32 weights and optimizer state); `both` times fp32 and bf16 of each side
    in the same alternating rounds and also prints the bf16 / fp32 speed-ups."""
    import argparse

    from lmforge.models import TaskModel
    from lmforge.train.optim import build_optimizer
    from lmforge.train.trainer import autocast

    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default=default_preset)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the sides")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "both"),
                        help="bf16: autocast on both sides (an error on a CPU without native bf16)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads; 0 = torch's default")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig.from_name(args.preset)
    if cfg.causal != need_causal:
        parser.error(f"--preset {args.preset} does not fit the {objective} objective")
    if args.seq > cfg.max_position_embeddings:
        parser.error(f"--seq {args.seq} exceeds the preset's {cfg.max_position_embeddings} positions")
    gen = torch.Generator().manual_seed(0)
    data = [make_batch(cfg.vocab_size, args.batch, args.seq, gen) for _ in range(args.warmup + args.steps)]
    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    cpu = torch.device("cpu")

    ours = TaskModel(cfg, heads).train()
    ours_opt = build_optimizer(ours, 1e-4)
    hf = hf_model(cfg, heads).train()
    hf_opt = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
    steps: dict[str, Callable[[Batch], None]] = {}
    for precision in precisions:
        context = functools.partial(autocast, cpu, precision)
        steps[f"hf {precision}"] = train_step(lambda b: hf(**b).loss, hf_opt, context)
        steps[f"ours {precision}"] = train_step(
            lambda b: ours(b["input_ids"], b["attention_mask"], **{label_key: b["labels"]}).loss, ours_opt, context)

    tps = interleaved_throughput(steps, data, args.steps, args.warmup, args.rounds)
    for precision in precisions:
        hf_tps, ours_tps = tps[f"hf {precision}"], tps[f"ours {precision}"]
        print(f"{args.preset} {objective} seq {args.seq} batch {args.batch} {precision} "
              f"({torch.get_num_threads()} threads, {args.steps} timed steps): transformers {hf_tps:,.0f} tok/s, "
              f"lmforge {ours_tps:,.0f} tok/s, ratio {ours_tps / hf_tps:.2f}x")
    if len(precisions) == 2:
        print(f"bf16 / fp32: lmforge {tps['ours bf16'] / tps['ours fp32']:.2f}x, "
              f"transformers {tps['hf bf16'] / tps['hf fp32']:.2f}x")
