"""Normalisation layers by name: LayerNorm (Ba et al. 2016) with or without bias, and RMSNorm."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

NormKind = Literal["layer", "rms"]


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), as T5 uses it (§2.1: "layer normalization ... only
    rescaled, no additive bias"): no mean subtraction, no bias, computed in fp32 whatever the input dtype
    (T5 overflows in half precision otherwise)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        normed = x.float() * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            normed = normed.to(self.weight.dtype)
        return self.weight * normed


def build_norm(kind: NormKind, dim: int, eps: float, bias: bool = True) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rms":
        return RMSNorm(dim, eps)
    raise ValueError(f"unknown norm {kind!r}; expected 'layer' or 'rms'")
