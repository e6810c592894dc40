"""Pre-training: the objective's dataset and models handed to the shared step loop (train/loop.py).

Data order is a pure function of (seed, epoch): each epoch's permutation comes from a generator
seeded with both, the global batch of step s is the slice [s*G, (s+1)*G) of it, and micro-batch a
of rank r is chunk r*accum + a of that slice. So 1 process with accum=k and k processes with
accum=1 see the same examples per step, and a resume only has to skip to (epoch, step).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lmforge.heads import Head
from lmforge.models import TaskModel
from lmforge.train import checkpoint as ckpt
from lmforge.train import loop
from lmforge.train.config import PretrainConfig, save_config, to_yaml
from lmforge.train.distributed import DistInfo, barrier, wrap
from lmforge.train.logger import RunLogger
from lmforge.train.loop import StepCallback, TrainState, to_device
from lmforge.train.metrics import Counts, head_counts, metrics_from_counts, output_heads
from lmforge.train.models import find_unused_parameters
from lmforge.train.optim import build_optimizer
from lmforge.train.precision import autocast, resolve_precision

__all__ = ["StepCallback", "TrainResult", "TrainState", "epoch_order", "micro_batches", "train", "resolve_precision"]


@dataclass
class TrainResult:
    state: TrainState
    final_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def micro_batches(n: int, seed: int, epoch: int, start_step: int, batch: int, accum: int,
                  info: DistInfo) -> list[list[int]]:
    """This rank's micro-batches from global step `start_step` to the end of the epoch."""
    order = epoch_order(n, seed, epoch).tolist()
    global_batch = batch * accum * info.world_size
    out = []
    for step in range(start_step, n // global_batch):
        base = step * global_batch
        for a in range(accum):
            chunk = base + (info.rank * accum + a) * batch
            out.append(order[chunk:chunk + batch])
    return out


class DatasetBatches:
    """A pre-training dataset as the loop's micro-batches (see the module docstring for the order)."""

    def __init__(self, dataset: Dataset, config: PretrainConfig, info: DistInfo, device: torch.device) -> None:
        self.dataset, self.config, self.info, self.device = dataset, config, info, device
        optim = config.optim
        global_batch = optim.batch_size * optim.grad_accum * info.world_size
        self.steps_per_epoch = len(dataset) // global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"training set has {len(dataset)} examples, fewer than one global batch "
                             f"({global_batch} = batch_size x grad_accum x world_size)")

    def epoch(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        config, optim = self.config, self.config.optim
        self.dataset.set_epoch(epoch)
        loader = DataLoader(
            self.dataset,
            batch_sampler=micro_batches(len(self.dataset), config.seed, epoch, start_step, optim.batch_size,
                                        optim.grad_accum, self.info),
            collate_fn=self.dataset.collate, num_workers=config.data.num_workers,
            generator=torch.Generator().manual_seed(config.seed),  # never draw from the global RNG
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader)


@torch.no_grad()
def evaluate(module: nn.Module, dataset: Dataset, config: PretrainConfig, info: DistInfo,
             device: torch.device, heads: dict[str, Head]) -> dict[str, float]:
    """Held-out metrics over the first `eval.max_batches` batches, split across ranks.

    Runs under a forked RNG so evaluating (ELECTRA samples) never changes the training stream.
    """
    was_training = module.training
    module.eval()
    size = config.eval.batch_size
    n = min(len(dataset), size * config.eval.max_batches)
    batches = [list(range(i, min(i + size, n))) for i in range(0, n, size)][info.rank::info.world_size]
    counts = Counts()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        for indices in batches:
            batch = to_device(dataset.collate([dataset[i] for i in indices]), device)
            with autocast(device, config.system.precision):
                out = module(**batch)
            counts.add("loss", out.loss.item() * len(indices))
            counts.add("loss_n", len(indices))
            head_counts(counts, out.heads, heads)
    module.train(was_training)
    return metrics_from_counts(counts.reduce(info, device), "eval_", heads)


def total_steps(config: PretrainConfig, steps_per_epoch: int) -> int | None:
    """Optimizer steps to run; None when only the wall-clock budget decides."""
    if config.schedule.max_steps > 0:
        return config.schedule.max_steps
    if config.schedule.time_budget_minutes > 0:
        return None
    return config.schedule.epochs * steps_per_epoch


def train(config: PretrainConfig, module: nn.Module, models: dict[str, TaskModel], train_set: Dataset,
          eval_set: Dataset | None, info: DistInfo, device: torch.device, *, resume: bool = False,
          callbacks: tuple[StepCallback, ...] = (), tokenizer_files: tuple[Path, ...] = ()) -> TrainResult:
    run_dir = Path(config.run_dir)
    opt_cfg, sched = config.optim, config.schedule
    source = DatasetBatches(train_set, config, info, device)
    precision = resolve_precision(device, config.system.precision)  # before any work: bf16 or a clear error
    if info.is_main:
        print(f"pretrain: precision {precision}" + (" (autocast; fp32 weights and AdamW state)" if precision == "bf16"
                                                     else "") + f", from system.precision={config.system.precision}")
    checkpoints = loop.Checkpoints(run_dir / "checkpoints", models, info, config.checkpoint.keep_last, to_yaml(config))
    heads = output_heads(models)  # before wrapping: FSDP swaps the module classes
    training = loop.prepare(
        module, checkpoints, device, resume=resume,
        wrap=lambda m: wrap(m, info, device, config.system.distributed, find_unused=find_unused_parameters(config, models)),
        make_optimizer=lambda m: build_optimizer(m, opt_cfg.lr, opt_cfg.weight_decay, (opt_cfg.beta1, opt_cfg.beta2),
                                                 opt_cfg.eps, scale_by_rms=opt_cfg.scale_by_rms))
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = None
    if info.is_main:
        save_config(config, run_dir / "config.yaml")
        logger = RunLogger(run_dir, resume_step=training.state.step if training.resumed_from else None)
    settings = loop.LoopSettings(
        lr=opt_cfg.lr, warmup=sched.warmup, schedule=sched.kind, min_lr_factor=sched.min_lr_factor,
        grad_accum=opt_cfg.grad_accum, grad_clip=opt_cfg.grad_clip, precision=precision,
        total_steps=total_steps(config, source.steps_per_epoch), time_budget_s=sched.time_budget_minutes * 60.0,
        log_every=config.system.log_every, eval_every=config.eval.every_steps,
        checkpoint_every=config.checkpoint.every_steps, keep_last=config.checkpoint.keep_last,
        progress=config.system.progress_bar, desc="pretrain")
    hooks = loop.LoopHooks(
        evaluate=None if eval_set is None else
        lambda state: evaluate(training.wrapped, eval_set, config, info, device, heads),
        log=logger.log if logger is not None else None, callbacks=callbacks)
    forward = torch.compile(training.wrapped) if config.system.compile else training.wrapped
    history = loop.run(settings, training, source, checkpoints, heads, info, device, hooks, forward)

    final_dir = None
    states = ckpt.full_states(module, models, info.is_main)  # a collective under FSDP
    if info.is_main:
        final_dir = save_final(run_dir, models, tokenizer_files, states)
        assert logger is not None
        logger.plot()
        logger.close()
    barrier(info)
    return TrainResult(state=training.state, final_dir=final_dir, history=history)


def save_final(run_dir: Path, models: dict[str, TaskModel], tokenizer_files: tuple[Path, ...],
               states: dict[str, dict] | None = None) -> Path:
    """`final/` is the trained model (the discriminator for ELECTRA) with its tokenizer beside it, ready
    for fine-tuning or `lmforge convert --to-hf`; other sub-models go to `final-<name>/`."""
    import shutil

    final = run_dir / "final"
    for sub, model in models.items():
        target = final if not sub else run_dir / f"final-{sub}"
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        ckpt.write_models(tmp, {"": model}, None if states is None else {"": states[sub]})
        for path in tokenizer_files:
            shutil.copy2(path, tmp / path.name)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return final
