"""Language-model heads: masked LM (BERT family) and causal LM (GPT), both tied to the input embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.heads.base import Head, HeadOutput
from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.nn.activations import activation

IGNORE = -100


class MaskedLMHead(Head):
    """dense -> act -> LayerNorm -> vocab projection (+ bias), projection tied to the token embeddings.

    With labels, only the masked positions (label != -100) go through the head: the vocabulary
    projection is most of an MLM step's cost and 85% of its rows would be thrown away
    (google-research/bert `gather_indexes`; cramming's sparse prediction).
    """

    kind = "mlm"
    default_label_key = "mlm_labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        emb = config.embedding_size
        self.dense = nn.Linear(config.hidden_size, emb)
        self.act = activation(config.mlm_activation)
        self.norm = nn.LayerNorm(emb, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(emb, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        if config.tie_word_embeddings:
            self.decoder.weight = backbone.embeddings.tok.weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(self.act(self.dense(hidden))), self.decoder.weight, self.bias)

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        labels = batch.get(self.label_key)
        hidden = out.last_hidden_state
        if labels is None:
            return HeadOutput(logits=self.logits(hidden))  # (B, T, V)
        selected = labels.ne(IGNORE)
        targets = labels[selected]  # (N,)
        logits = self.logits(hidden[selected])  # (N, V)
        loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
        return HeadOutput(logits=logits, loss=loss, labels=targets)


class CausalLMHead(Head):
    """GPT-1 §3.1 / GPT-2: next-token prediction with the output projection tied to the input embedding."""

    kind = "clm"
    default_label_key = "lm_labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.decoder.weight = backbone.embeddings.tok.weight

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=self.decoder(out.last_hidden_state))  # (B, T, V)
        # position t predicts token t+1. Shifting the labels (not slicing the (B, T, V) logits) and
        # projecting only positions that have a target saves a full copy of the largest tensor.
        targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # (B, T)
        selected = targets.ne(IGNORE)
        logits = self.decoder(out.last_hidden_state[selected])  # (N, V)
        targets = targets[selected]
        loss = F.cross_entropy(logits.float(), targets) if targets.numel() else logits.sum() * 0.0
        return HeadOutput(logits=logits, loss=loss, labels=targets)
