"""AdamW with the usual no-decay groups, and warmup + linear/cosine/constant/inverse-sqrt learning-rate
schedules."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

Schedule = Literal["linear", "cosine", "constant", "inverse_sqrt"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases and LayerNorm/embedding-norm gains (1-D tensors) are not decayed
    (BERT's AdamWeightDecayOptimizer excludes LayerNorm and bias; nanoGPT splits by `dim() >= 2`)."""
    decay, no_decay = [], []
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01,
                    betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                    scale_by_rms: bool = False) -> torch.optim.Optimizer:
    """AdamW; with `scale_by_rms`, AdamW with updates scaled by each tensor's RMS (T5: train.adamw_scale)."""
    if scale_by_rms:
        from lmforge.train.adamw_scale import AdamWScale

        return AdamWScale(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)
    # The fused kernel exists for CPU and CUDA (torch >= 2.4) and is ~10x faster than the per-tensor
    # loop on CPU, where the optimizer step can otherwise cost as much as a short-sequence step.
    devices = {p.device.type for p in model.parameters()}
    fused = True if len(devices) == 1 and devices <= {"cpu", "cuda"} else None
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps,
                             fused=fused)


def lr_factor(progress: float, warmup: float, schedule: Schedule, min_factor: float = 0.0) -> float:
    """Multiplier of the peak learning rate at `progress` in [0, 1] of training.

    `warmup` is a fraction of training too, so the same function serves step budgets and
    wall-clock budgets (cramming: the schedule follows elapsed time).
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if schedule == "constant":
        return 1.0
    rest = (progress - warmup) / max(1.0 - warmup, 1e-12)
    if schedule == "linear":
        return min_factor + (1.0 - min_factor) * (1.0 - rest)
    if schedule == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * rest))
    if schedule == "inverse_sqrt":  # Vaswani et al. §5.3, divided by its peak (see `inverse_sqrt_peak_lr`)
        if warmup <= 0:
            raise ValueError("the inverse_sqrt schedule needs a warmup > 0 (its peak is at the end of warmup)")
        return math.sqrt(warmup / progress)
    raise ValueError(f"unknown schedule {schedule!r}")


def inverse_sqrt_peak_lr(d_model: int, warmup_steps: int) -> float:
    """Vaswani et al. §5.3: lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5) rises linearly
    for `warmup_steps` and decays with 1/sqrt(step). Its peak (at step = warmup_steps) is this value, so
    peak lr = inverse_sqrt_peak_lr(d, w) with schedule "inverse_sqrt" and warmup = w / total steps is that
    schedule (base model: d 512, 4000 warmup steps -> 7.0e-4)."""
    return d_model ** -0.5 * warmup_steps ** -0.5


def set_lr(optimizer: torch.optim.Optimizer, peak_lr: float, factor: float) -> float:
    lr = peak_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
