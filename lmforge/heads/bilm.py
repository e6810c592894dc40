"""ELMo's biLM head (Peters et al. 2018 §3.1): one softmax shared by the forward LM (state t predicts
token t+1) and the backward LM (state t predicts token t-1); the loss is the mean of the two
directions' mean negative log-likelihoods, as bilm-tf trains it.

The backbone's last state is [forward; backward] (B, T, 2P). Each direction's rows with a target go
through `linear_cross_entropy`, so no (N, V) logits are formed in training. The softmax is held as
raw parameters initialised as bilm-tf does (N(0, 1/sqrt(P))), which lmforge's generic head
initialisation (for nn.Linear/nn.Embedding) leaves alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.heads.base import Head, HeadOutput
from lmforge.models.backbone import BackboneOutput
from lmforge.nn.cross_entropy import linear_cross_entropy

IGNORE = -100
DIRECTIONS = ("forward", "backward")


@dataclass
class BiLMOutput(HeadOutput):
    """`labels`/`predictions`: both directions' predicted rows, forward first; per-direction sums for
    the held-out perplexity of each direction."""

    direction_loss: dict[str, torch.Tensor] | None = None  # summed NLL per direction (read after the step)
    direction_n: dict[str, int] | None = None


def direction_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) token ids (IGNORE on padding) -> the next token (forward) and previous token (backward)
    at every position, IGNORE where there is none or where the position itself is padding (the
    backward LM's first padding position would otherwise predict the last real token)."""
    padding = labels.eq(IGNORE)
    forward = F.pad(labels[:, 1:], (0, 1), value=IGNORE).masked_fill(padding, IGNORE)  # (B, T)
    backward = F.pad(labels[:, :-1], (1, 0), value=IGNORE).masked_fill(padding, IGNORE)  # (B, T)
    return forward, backward


class BiLMHead(Head):
    kind = "bilm"
    default_label_key = "lm_labels"

    def __init__(self, config: Any, backbone: nn.Module, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.projection_dim = config.projection_dim
        self.softmax_weight = nn.Parameter(torch.randn(config.vocab_size, config.projection_dim)
                                           / math.sqrt(config.projection_dim))
        self.softmax_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.dropout = nn.Dropout(config.dropout)  # bilm-tf drops out the LSTM output before the softmax

    def split(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return hidden[..., : self.projection_dim], hidden[..., self.projection_dim:]  # (B, T, P) each

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        labels = batch.get(self.label_key)
        states = self.split(out.last_hidden_state)
        if labels is None:  # (2, B, T, V): forward LM's next-token and backward LM's previous-token logits
            return HeadOutput(logits=torch.stack([F.linear(s, self.softmax_weight, self.softmax_bias)
                                                  for s in states]))
        losses, n, sums, rows, preds = [], {}, {}, [], []
        for name, state, targets in zip(DIRECTIONS, states, direction_targets(labels)):
            selected = targets.ne(IGNORE)
            hidden, target = self.dropout(state[selected]), targets[selected]  # (N, P), (N,)
            if target.numel():
                loss, predicted = linear_cross_entropy(hidden, self.softmax_weight, self.softmax_bias, target)
            else:
                loss, predicted = hidden.sum() * 0.0, target
            losses.append(loss)
            n[name], sums[name] = target.numel(), loss.detach() * target.numel()
            rows.append(target)
            preds.append(predicted)
        return BiLMOutput(logits=None, loss=(losses[0] + losses[1]) / 2, labels=torch.cat(rows),
                          predictions=torch.cat(preds), direction_loss=sums, direction_n=n)

    def direction_loss(self, hidden: torch.Tensor, targets: torch.Tensor, direction: str) -> torch.Tensor:
        """Mean NLL of one direction's LM over chosen rows of [forward; backward] states (N, 2P) and their
        targets (N,): held-out scoring (lmforge.perplexity) picks each direction's rows itself."""
        state = self.split(hidden)[DIRECTIONS.index(direction)]
        return linear_cross_entropy(state, self.softmax_weight, self.softmax_bias, targets)[0]

    def metric_counts(self, name: str, out: HeadOutput) -> dict[str, float]:
        assert isinstance(out, BiLMOutput)
        counts = {f"{name}_correct": (out.predictions == out.labels).sum().item(), f"{name}_n": out.labels.numel()}
        for direction in DIRECTIONS:
            counts[f"{name}_{direction}_loss"] = float(out.direction_loss[direction])
            counts[f"{name}_{direction}_n"] = out.direction_n[direction]
        return counts

    def metrics(self, name: str, sums: dict[str, float]) -> dict[str, float]:
        """Accuracy over both directions, and each direction's mean loss and perplexity exp(loss)."""
        result = super().metrics(name, sums)
        for direction in DIRECTIONS:
            count = sums.get(f"{name}_{direction}_n")
            if count:
                loss = sums[f"{name}_{direction}_loss"] / count
                result[f"{name}_{direction}_loss"] = loss
                result[f"{direction}_perplexity"] = math.exp(min(loss, 50.0))
        return result
