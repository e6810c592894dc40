"""The position-wise feed-forward sublayer (Vaswani et al. §3.3), plain or gated.

Plain: fc_out(act(fc_in(x))). Gated (Shazeer 2020, "GLU Variants Improve Transformer"; T5 v1.1's
gated-GELU): fc_out(act(fc_in(x)) * fc_up(x)). T5 drops out the inner activation; BERT/GPT do not.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.nn.activations import activation
from lmforge.nn.dropout import Dropout


class FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int, act: str, *, gated: bool = False, bias: bool = True,
                 inner_dropout: float = 0.0) -> None:
        super().__init__()
        self.fc_in = nn.Linear(dim, inner, bias=bias)
        self.fc_up = nn.Linear(dim, inner, bias=bias) if gated else None
        self.act = activation(act)
        self.drop = Dropout(inner_dropout) if inner_dropout > 0 else None
        self.fc_out = nn.Linear(inner, dim, bias=bias)
        self.fc_out.residual_output = True  # init role (lmforge.nn.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc_in(x))  # (B, T, inner)
        if self.fc_up is not None:
            h = h * self.fc_up(x)
        if self.drop is not None:
            h = self.drop(h)
        return self.fc_out(h)
