"""What every head shares: a spec that round-trips through config.json, and an output type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models.backbone import Backbone, BackboneOutput


@dataclass
class HeadOutput:
    logits: torch.Tensor | None  # None when a fused loss never materialised them (LM heads in training)
    loss: torch.Tensor | None = None
    labels: torch.Tensor | None = None  # the targets `logits` line up with (MLM: masked positions only)
    predictions: torch.Tensor | None = None  # argmax classes, for accuracy without logits


class Head(nn.Module):
    """A head reads the backbone's output and owns its loss.

    `spec` holds the constructor arguments, so `config.json` can rebuild the head; `label_key`
    names the batch entry with its targets, so several heads can train together (MLM + NSP).
    """

    kind: ClassVar[str]
    default_label_key: ClassVar[str] = "labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, *, label_key: str | None = None,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.label_key = label_key or self.default_label_key
        self.loss_weight = loss_weight

    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "label_key": self.label_key, "loss_weight": self.loss_weight}

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:  # pragma: no cover
        raise NotImplementedError

    def metric_counts(self, name: str, out: HeadOutput) -> dict[str, float]:
        """Sums behind this head's metrics for one batch (`{name}_correct`, `{name}_n`, ...); the
        trainer adds them over batches and ranks, then `metrics` divides. None by default."""
        return {}

    def metrics(self, name: str, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from summed counts: accuracy when the head counts correct predictions."""
        if not sums.get(f"{name}_n") or f"{name}_correct" not in sums:
            return {}
        return {f"{name}_accuracy": sums[f"{name}_correct"] / sums[f"{name}_n"]}


def first_token(hidden: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]  # (B, H)


def last_real_token(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """GPT classifies from the last non-padding token (its only token that has seen the whole text)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * attention_mask.long()).argmax(dim=-1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
