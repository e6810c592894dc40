"""Dropout (Srivastava et al. 2014) with a cheaper mask on CPU.

On CPU `F.dropout` draws one Mersenne-Twister number per element through `bernoulli_`; in a small
BERT that was ~10% of a training step (torch.profiler over bench_mlm.py's bert-mini step). Here one 64-bit draw feeds
four elements: each 16-bit lane keeps 15 uniform bits (`random_()` on int64 fills [0, 2^63), so
the top lane has one bit fewer) and an element is dropped when its lane falls below
round(p * 2^15). The drop probability is therefore p to within 2^-16 (0.1 -> 0.100006), and
the scale is 1 / (1 - that probability), so the expectation is exact. It draws from the default
torch generator, so a seeded or resumed run repeats its masks exactly.

On CUDA the fused Philox kernel of `F.dropout` is already cheap and is used as is.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_LANE_LEVELS = 1 << 15  # uniform bits kept per 16-bit lane


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A bool mask of `shape`, True = keep, each element dropped with probability ~p (see module
    docstring), and the scale 1 / (1 - exact drop probability) to apply to kept elements."""
    threshold = round(p * _LANE_LEVELS)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_()
    lanes = words.view(torch.int16)[:count].view(shape)  # 4 lanes of 16 bits per draw
    keep = (lanes & (_LANE_LEVELS - 1)) >= threshold
    return keep, 1.0 / (1.0 - threshold / _LANE_LEVELS)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    keep, scale = keep_mask(x.shape, p, x.device)
    return x.mul(keep).mul_(scale)


class Dropout(nn.Module):
    """Drop-in for `nn.Dropout` using `dropout` above."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
