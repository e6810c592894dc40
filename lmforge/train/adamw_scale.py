"""AdamW with each update scaled by the RMS of the tensor it updates, for T5.

T5 was trained with Adafactor (Raffel et al. §3.1.2), whose relative step size (Shazeer & Stern 2018 §8)
multiplies the update by max(1e-3, RMS(parameter)): every tensor then moves by a fixed fraction of its own
scale, whatever its init (T5's embeddings ~N(0, 1), its attention matrices ~N(0, d^-1/2)). nanoT5 (Nawrot
2023) found that plain AdamW diverges on T5 at the learning rates Adafactor uses and that AdamW with this
scaling trains stably at lr 2e-2; `AdamWScale` is that optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch


class AdamWScale(torch.optim.Optimizer):
    """Adam moments with bias correction; the step is lr * max(min_scale, RMS(p)) * m_hat / (sqrt(v_hat) + eps);
    decoupled weight decay p -= lr * weight_decay * p (Loshchilov & Hutter 2019)."""

    def __init__(self, params: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, min_scale: float = 1e-3) -> None:
        if lr <= 0 or eps <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"AdamWScale: bad hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, min_scale=min_scale))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = float(state["step"])
                grad, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, 1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                # Adam's bias corrections folded into the step and the denominator
                step = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                denom = v.sqrt().add_(group["eps"] * math.sqrt(1 - beta2 ** t))
                scale = max(group["min_scale"], p.float().pow(2).mean().sqrt().item())  # RMS(p) before the step
                p.addcdiv_(m, denom, value=-step * scale)
                if group["weight_decay"]:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss
