"""ELMo's task-specific combination of a model's layers (Peters et al. 2018 §3.2, eq. 1):
ELMo_k = gamma * sum_j s_j h_kj with s = softmax(w), so the weights stay a convex combination while
the task learns them; gamma scales the whole vector ("of practical importance to aid the optimization").
AllenNLP's ScalarMix keeps the same parameters (`scalar_parameters`, `gamma`).

`standardize_dim` standardizes each layer per dimension over the real tokens before the weighting,
with the running mean and variance of the training batches (in training and evaluation alike). §3.2
notes that normalizing each biLM layer before weighting "in some cases" helped; here it is what lets
a linear task head learn from frozen biLM states at all: those are a large per-dimension offset shared
by every token plus a small token-to-token spread (elmo-cpu, random or briefly pre-trained: spread
0.05-0.4 per dimension around vectors of norm 3-27). On them as they are the head's updates go to the
offset and it predicts the majority class: CoNLL dev F1 0.0-0.3 after up to 1,180 steps on a 1,871-
sentence slice, where the standardized layers gave 20-27 (head trained on cached features, Adam 1e-3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

EPS = 1e-5


class ScalarMix(nn.Module):
    def __init__(self, num_layers: int, weights: Sequence[float] | None = None, gamma: float = 1.0,
                 trainable: bool = True, standardize_dim: int | None = None) -> None:
        """`weights`: the unnormalised w_j (default 0: the plain average of the layers); `standardize_dim`:
        the layers' width, to standardize each of their dimensions before mixing (None: as they are)."""
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"a scalar mix needs at least one layer, got {num_layers}")
        if weights is not None and len(weights) != num_layers:
            raise ValueError(f"scalar mix: {len(weights)} weights for {num_layers} layers")
        initial = torch.tensor(list(weights) if weights is not None else [0.0] * num_layers, dtype=torch.float32)
        self.weights = nn.Parameter(initial, requires_grad=trainable)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)), requires_grad=trainable)
        self.standardize_dim = standardize_dim
        if standardize_dim is not None:
            # mean and variance of every real token of the training batches so far (exact, not a momentum:
            # frozen features have one distribution, and a short run's first evaluation already reads it)
            self.register_buffer("running_mean", torch.zeros(num_layers, standardize_dim))
            self.register_buffer("running_var", torch.ones(num_layers, standardize_dim))
            self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))

    def normalized(self) -> torch.Tensor:
        """s_j = softmax(w)_j, (L,)."""
        return torch.softmax(self.weights, dim=0)

    def standardized(self, layers: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(L, B, T, H) -> the same, each layer's dimensions at mean 0 and variance 1 over real tokens.
        Training adds the batch to the running statistics first; both modes then use those, so a batch
        is normalised as evaluation will be, whatever its composition (fine-tuning batches group
        sentences of one length: CoNLL's short headline and score lines make their own batches)."""
        if self.training:
            with torch.no_grad():
                rows = (layers[:, mask.bool()] if mask is not None else layers.flatten(1, -2)).float()  # (L, N, H)
                self._add_to_statistics(rows)
        scale = torch.rsqrt(self.running_var + EPS)[:, None, None]  # (L, 1, 1, H)
        return ((layers.float() - self.running_mean[:, None, None]) * scale).to(layers.dtype)

    def _add_to_statistics(self, rows: torch.Tensor) -> None:
        """Merge a batch's moments into the running ones (Chan et al. 1979's pairwise update)."""
        n, count = self.tokens_seen.item(), rows.shape[1]
        if count == 0:
            return
        total = n + count
        mean, var = rows.mean(1), rows.var(1, unbiased=False)
        delta = mean - self.running_mean
        self.running_var.copy_((self.running_var * n + var * count + delta.square() * n * count / total) / total)
        self.running_mean.add_(delta * count / total)
        self.tokens_seen.fill_(total)

    def forward(self, layers: Sequence[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        """L tensors of one shape (B, T, H) -> their mix, (B, T, H); `mask` (B, T) marks the real tokens
        whose statistics standardize the layers."""
        if len(layers) != self.weights.numel():
            raise ValueError(f"scalar mix of {self.weights.numel()} layers got {len(layers)}")
        if self.standardize_dim is not None:
            layers = self.standardized(torch.stack(list(layers)), mask).unbind(0)
        s = self.normalized().to(layers[0].dtype)
        mixed = sum(weight * layer for weight, layer in zip(s, layers))
        return self.gamma.to(layers[0].dtype) * mixed
