"""Activation functions by name, so configs stay serializable."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class GELUTanh(nn.Module):
    """GELU with the tanh approximation (GPT-1/GPT-2 and ALBERT's "gelu_new")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate="tanh")


def activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_tanh":
        return GELUTanh()
    if name == "relu":
        return nn.ReLU()
    if name == "tanh":
        return nn.Tanh()
    if name == "silu":  # swish (Ramachandran et al. 2017): the FFN activation of the released opus-mt models
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}")
