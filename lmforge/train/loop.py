"""The optimizer-step loop that `pretrain` and `finetune` share.

Both are: set the learning rate; run `grad_accum` micro-batches under autocast, with the gradient
all-reduce only on the last one; clip; step; then log, evaluate and checkpoint on their cadence, until
a step count or a wall-clock budget is reached. What differs is handed in: where this rank's
micro-batches come from (`MicroBatches`) and what evaluation and logging mean (`LoopHooks`).

A checkpoint holds every model's full weights, the optimizer, the loop state, the caller's extra
state and each rank's RNG, written to a temporary directory and renamed; a run killed at any moment
resumes from the last one and continues as if it had never stopped (tests/test_resume.py,
tests/test_finetune_loop.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm import tqdm

from lmforge.heads import Head
from lmforge.models import TaskModel
from lmforge.train import checkpoint as ckpt
from lmforge.train.distributed import DistInfo, all_reduce_mean, barrier, clip_grad_norm, no_sync
from lmforge.train.metrics import Counts, head_counts, metrics_from_counts
from lmforge.train.optim import lr_factor, set_lr
from lmforge.train.precision import autocast

StepCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    step_in_epoch: int = 0  # global batches of `epoch` already consumed
    elapsed: float = 0.0  # training seconds, carried across resumes (time budgets)
    tokens: int = 0  # real (non-padding) tokens seen, all ranks

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(kw_only=True)
class LoopSettings:
    lr: float  # peak
    warmup: float  # share of training (of the steps, or of the time under a budget)
    schedule: str = "linear"
    min_lr_factor: float = 0.0
    grad_accum: int = 1
    grad_clip: float = 1.0  # 0: off
    precision: str = "fp32"  # resolved (lmforge.train.precision): fp32 or bf16
    total_steps: int | None = None  # None: the wall-clock budget decides
    time_budget_s: float = 0.0
    log_every: int = 1
    eval_every: int = 0  # 0: only after the last step
    checkpoint_every: int = 0  # 0: only after the last step
    keep_last: int = 2
    progress: bool = True
    desc: str = "train"


class MicroBatches(Protocol):
    """This rank's share of the data, as a pure function of (epoch, step): resuming is skipping."""

    steps_per_epoch: int

    def epoch(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        """Micro-batches of `epoch` from global step `start_step` on, `grad_accum` per step."""
        ...


@dataclass
class LoopHooks:
    evaluate: Callable[[TrainState], dict[str, Any]] | None = None  # every rank; fields for the record
    log: Callable[[dict[str, Any]], None] | None = None  # main rank: each finished record
    extra_state: Callable[[], dict[str, Any]] | None = None  # saved in every checkpoint
    write_extra: Callable[[Path], None] | None = None  # main rank: more files into a checkpoint
    should_stop: Callable[[], bool] | None = None  # main rank's verdict after an evaluation (early stopping)
    callbacks: tuple[StepCallback, ...] = ()


class Checkpoints:
    """`root/step-NNNNNNN/`, complete or absent: a kill during a save leaves the previous one."""

    def __init__(self, root: Path, models: dict[str, TaskModel], info: DistInfo, keep_last: int,
                 config_text: str = "") -> None:
        self.root, self.models, self.info = root, models, info
        self.keep_last, self.config_text = keep_last, config_text

    def latest(self) -> Path | None:
        return ckpt.latest_checkpoint(self.root)

    def load(self, directory: Path) -> dict[str, Any]:
        """The saved trainer state; the weights go into the live models (before FSDP shards them)."""
        saved = ckpt.load_trainer_state(directory)
        if self.config_text and saved.get("config_yaml") != self.config_text:
            print(f"warning: resuming {directory} with a config that differs from the one it was saved with")
        ckpt.load_models(directory, self.models)
        return saved

    def save(self, module: nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
             hooks: LoopHooks) -> None:
        info = self.info
        tmp = ckpt.begin(self.root, state.step) if info.is_main else self.root / f".tmp-step-{state.step:07d}"
        barrier(info)
        ckpt.write_rank_rng(tmp, info.rank)
        states = ckpt.full_states(module, self.models, info.is_main)  # collectives under FSDP: every rank
        optimizer_state = ckpt.optimizer_state(module, optimizer)
        extra = hooks.extra_state() if hooks.extra_state else {}
        barrier(info)
        if info.is_main:
            ckpt.write_models(tmp, self.models, states)
            if hooks.write_extra:
                hooks.write_extra(tmp)
            ckpt.commit(tmp, self.root, state.step, {
                "optimizer": optimizer_state, "train_state": state.to_dict(), "extra": extra,
                "config_yaml": self.config_text, "world_size": info.world_size,
            }, self.keep_last)
        barrier(info)


@dataclass
class Training:
    """A model ready to train: wrapped for DDP/FSDP, its optimizer, and where it starts."""

    module: nn.Module  # the unwrapped root the models live in
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    state: TrainState = field(default_factory=TrainState)
    extra: dict[str, Any] = field(default_factory=dict)  # the caller's extra state of the resumed checkpoint
    resumed_from: Path | None = None


def prepare(module: nn.Module, checkpoints: Checkpoints, device: torch.device, *,
            wrap: Callable[[nn.Module], nn.Module],
            make_optimizer: Callable[[nn.Module], torch.optim.Optimizer], resume: bool) -> Training:
    """The order FSDP needs: full weights of a resume first, then wrapping (which shards the
    parameters), then the optimizer over the wrapped parameters and its saved state."""
    module.to(device)
    saved, resumed_from = None, None
    if resume:
        resumed_from = checkpoints.latest()
        if resumed_from is None:
            raise FileNotFoundError(f"{checkpoints.root}: asked to resume, but there is no complete checkpoint")
        saved = checkpoints.load(resumed_from)
    wrapped = wrap(module)
    optimizer = make_optimizer(module)
    if saved is None:
        return Training(module, wrapped, optimizer)
    ckpt.load_optimizer_state(module, optimizer, saved["optimizer"])
    return Training(module, wrapped, optimizer, TrainState(**saved["train_state"]), saved.get("extra", {}),
                    resumed_from)


def real_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def run(settings: LoopSettings, training: Training, source: MicroBatches, checkpoints: Checkpoints,
        heads: dict[str, Head], info: DistInfo, device: torch.device, hooks: LoopHooks | None = None,
        forward: Callable[..., Any] | None = None) -> list[dict[str, Any]]:
    """Train until `total_steps` (or the budget); returns the logged records. `forward` defaults to
    the wrapped module (pass a compiled one to compile)."""
    hooks = hooks or LoopHooks()
    module, wrapped, optimizer, state = training.module, training.wrapped, training.optimizer, training.state
    forward = forward or wrapped
    total, budget, accum = settings.total_steps, settings.time_budget_s, settings.grad_accum
    if training.resumed_from is not None:
        ckpt.set_rng_state(ckpt.load_rank_rng(training.resumed_from, info.rank))  # nothing may draw before

    def progress() -> float:
        return state.elapsed / budget if budget > 0 else state.step / total

    stopped = False

    def done() -> bool:
        if stopped:
            return True
        if total is not None and state.step >= total:
            return True
        if budget > 0:
            flag = torch.tensor([float(state.elapsed >= budget)], device=device)
            return bool(all_reduce_mean(flag, info).item() > 0)  # every rank stops at the same step
        return False

    # with a wall-clock budget the step count is unknown: show steps and rate, and the time left
    bar = tqdm(total=None if budget > 0 else total, initial=state.step, dynamic_ncols=True, desc=settings.desc,
               disable=not (info.is_main and settings.progress))
    history: list[dict[str, Any]] = []
    module.train()
    start = time.perf_counter() - state.elapsed
    window_tokens, window_start = 0, time.perf_counter()
    while not done():
        micro = source.epoch(state.epoch, state.step_in_epoch)
        while state.step_in_epoch < source.steps_per_epoch and not done():
            lr = set_lr(optimizer, settings.lr,
                        lr_factor(progress(), settings.warmup, settings.schedule, settings.min_lr_factor))
            loss_sum = torch.zeros((), device=device)
            counts = Counts()
            tokens = 0
            for a in range(accum):
                batch = to_device(next(micro), device)
                tokens += real_tokens(batch)
                with no_sync(wrapped, info, sync=a == accum - 1):
                    with autocast(device, settings.precision):
                        out = forward(**batch)
                    (out.loss / accum).backward()
                loss_sum += out.loss.detach()
                with torch.no_grad():
                    head_counts(counts, out.heads, heads)
            if not torch.isfinite(loss_sum):  # never train on (or save) a diverged model
                raise FloatingPointError(f"training loss is {loss_sum.item() / accum} at step {state.step + 1}; "
                                         "lower the learning rate")
            grad_norm = clip_grad_norm(module, settings.grad_clip) if settings.grad_clip > 0 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.step_in_epoch += 1
            state.elapsed = time.perf_counter() - start
            if info.enabled:  # exact global count (ranks pad differently); one scalar per step
                tokens = int(round(all_reduce_mean(torch.tensor([float(tokens)], device=device), info).item()
                                   * info.world_size))
            window_tokens += tokens
            state.tokens += tokens
            bar.update(1)

            final = done()
            record: dict[str, Any] = {"step": state.step}
            if state.step % settings.log_every == 0 or state.step == 1 or final:
                loss = all_reduce_mean(loss_sum / accum, info).item()
                now = time.perf_counter()
                record.update(loss=loss, lr=lr, epoch=state.epoch, tokens=state.tokens,
                              tokens_per_s=window_tokens / max(now - window_start, 1e-9), elapsed_s=state.elapsed)
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                record.update(metrics_from_counts(counts.reduce(info, device), "train_", heads))
                record.pop("train_loss", None)
                window_tokens, window_start = 0, now
                left = {"left": f"{max(budget - state.elapsed, 0) / 60:.1f}min"} if budget > 0 else {}
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", **left)
            if hooks.evaluate and ((settings.eval_every and state.step % settings.eval_every == 0) or final):
                record.update(hooks.evaluate(state))
                if hooks.should_stop and not final:
                    flag = torch.tensor([float(info.is_main and hooks.should_stop())], device=device)
                    stopped = final = bool(all_reduce_mean(flag, info).item() > 0)  # rank 0 decides for all
            if len(record) > 1:
                history.append(record)
                if info.is_main and hooks.log:
                    hooks.log(record)
            if (settings.checkpoint_every and state.step % settings.checkpoint_every == 0) or final:
                checkpoints.save(module, optimizer, state, hooks)
            for callback in hooks.callbacks:
                callback(state.step, record)
        if state.step_in_epoch >= source.steps_per_epoch:
            state.epoch += 1
            state.step_in_epoch = 0
    bar.close()
    return history
