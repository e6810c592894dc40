"""Sentence-level and token-level pre-training heads: NSP, SOP, replaced-token detection."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.heads.base import Head, HeadOutput
from lmforge.heads.lm import IGNORE
from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.nn.activations import activation
from lmforge.nn.dropout import Dropout


class SegmentPairHead(Head):
    """Two-way classifier on the pooled [CLS]: is segment B the real continuation of A?

    NSP (BERT §3.1, task #2): B is the next segment 50% of the time, a random one otherwise.
    SOP (ALBERT §4.2): B follows A, or A and B are swapped; same head, different data.
    Label 0 = in order / is next, 1 = swapped / random (the google-research convention).
    """

    kind = "nsp"
    default_label_key = "nsp_labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        if getattr(backbone, "pooler", None) is None:
            raise ValueError(f"{self.kind} needs a pooler; this {config.family} model has none")
        self.drop = Dropout(config.classifier_dropout if config.pair_head_dropout else 0.0)
        self.out = nn.Linear(config.hidden_size, 2)

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        logits = self.out(self.drop(out.pooled))  # (B, 2)
        labels = batch.get(self.label_key)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return HeadOutput(logits=logits, loss=loss, labels=labels)


    def metric_counts(self, name: str, out: HeadOutput) -> dict[str, float]:
        return {f"{name}_correct": (out.logits.argmax(-1) == out.labels).sum().item(),
                f"{name}_n": out.labels.numel()}


class SentenceOrderHead(SegmentPairHead):
    kind = "sop"
    default_label_key = "sop_labels"


class ReplacedTokenHead(Head):
    """ELECTRA §2: per-token binary classifier, 'was this token replaced by the generator?'"""

    kind = "rtd"
    default_label_key = "rtd_labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = activation(config.activation)
        self.out = nn.Linear(config.hidden_size, 1)

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        logits = self.out(self.act(self.dense(out.last_hidden_state))).squeeze(-1)  # (B, T)
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=logits)
        active = labels.ne(IGNORE)
        loss = F.binary_cross_entropy_with_logits(logits[active].float(), labels[active].float())
        return HeadOutput(logits=logits, loss=loss, labels=labels)

    def metric_counts(self, name: str, out: HeadOutput) -> dict[str, float]:
        """Accuracy over real tokens (labels != -100); a positive logit means "replaced"."""
        active = out.labels.ne(IGNORE)
        predicted = out.logits.gt(0).long()
        return {f"{name}_correct": (predicted[active] == out.labels[active]).sum().item(),
                f"{name}_n": active.sum().item()}
