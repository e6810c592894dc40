"""ELMo's task-specific combination of a model's layers (Peters et al. 2018 §3.2, eq. 1):
ELMo_k = gamma * sum_j s_j h_kj with s = softmax(w), so the weights stay a convex combination while
the task learns them; gamma scales the whole vector ("of practical importance to aid the optimization").
AllenNLP's ScalarMix keeps the same parameters (`scalar_parameters`, `gamma`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ScalarMix(nn.Module):
    def __init__(self, num_layers: int, weights: Sequence[float] | None = None, gamma: float = 1.0,
                 trainable: bool = True) -> None:
        """`weights`: the unnormalised w_j (default 0: the plain average of the layers)."""
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a scalar mix needs at least one layer, got {num_layers}")
        if weights is not None and len(weights) != num_layers:
            raise ValueError(f"scalar mix: {len(weights)} weights for {num_layers} layers")
        initial = torch.tensor(list(weights) if weights is not None else [0.0] * num_layers, dtype=torch.float32)
        self.weights = nn.Parameter(initial, requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)), requires_grad=trainable)

    def normalized(self) -> torch.Tensor:
        """s_j = softmax(w)_j, (L,)."""
        return torch.softmax(self.weights, dim=0)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """L tensors of one shape (B, T, H) -> their mix, (B, T, H)."""
        if len(layers) != self.weights.numel():
            raise ValueError(f"scalar mix of {self.weights.numel()} layers got {len(layers)}")
        s = self.normalized().to(layers[0].dtype)
        mixed = sum(weight * layer for weight, layer in zip(s, layers))
        return self.gamma.to(layers[0].dtype) * mixed
