"""Language-model heads: masked LM (BERT family), causal LM (GPT) and sequence-to-sequence LM (the
original Transformer / Marian), all tied to the input embeddings.

Both predict only the positions that have a target, and by default compute the loss with
`linear_cross_entropy`, which never materialises the (N, V) logits: the step then returns argmax
`predictions` instead of logits. `fused_loss=False` keeps the logits (ELECTRA samples from them).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.heads.base import Head, HeadOutput
from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.nn.activations import activation
from lmforge.nn.cross_entropy import linear_cross_entropy
from lmforge.nn.projection import output_projection

IGNORE = -100


class _VocabularyHead(Head):
    """The shared part: select positions with a target, project to the vocabulary, cross-entropy."""

    decoder: nn.Linear
    bias: torch.Tensor | None
    perplexity_key: ClassVar[str] = "{name}_perplexity"
    label_smoothing: float = 0.0  # the seq2seq head takes one (Vaswani et al. §5.4); 0 elsewhere

    def __init__(self, config: ModelConfig, backbone: Backbone, *, fused_loss: bool = True, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.fused_loss = fused_loss

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "fused_loss": self.fused_loss}

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return output_projection(self.transform(hidden), self.decoder.weight, self.bias)

    def metric_counts(self, name: str, out: HeadOutput) -> dict[str, float]:
        """`predictions` and `labels` hold the positions with a target only, (N,)."""
        n = out.labels.numel()
        return {f"{name}_loss": out.loss.item() * n, f"{name}_correct": (out.predictions == out.labels).sum().item(),
                f"{name}_n": n}

    def metrics(self, name: str, sums: dict[str, float]) -> dict[str, float]:
        """Mean loss, accuracy and perplexity = exp(mean loss) over the predicted positions."""
        if not sums.get(f"{name}_n"):
            return {}
        loss = sums[f"{name}_loss"] / sums[f"{name}_n"]
        return {f"{name}_loss": loss, **super().metrics(name, sums),
                self.perplexity_key.format(name=name): math.exp(min(loss, 50.0))}

    def loss_at(self, hidden: torch.Tensor, targets: torch.Tensor) -> HeadOutput:
        """Loss of the rows `hidden` (N, H) against `targets` (N,)."""
        if self.fused_loss and targets.numel():
            loss, predictions = linear_cross_entropy(self.transform(hidden), self.decoder.weight, self.bias,
                                                     targets, self.label_smoothing)
            return HeadOutput(logits=None, loss=loss, labels=targets, predictions=predictions)
        logits = self.logits(hidden)  # (N, V)
        loss = (F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing) if targets.numel()
                else logits.sum() * 0.0)
        return HeadOutput(logits=logits, loss=loss, labels=targets, predictions=logits.argmax(-1))


class MaskedLMHead(_VocabularyHead):
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
            self.decoder.weight = backbone.input_embeddings().weight

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(hidden)))

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        labels = batch.get(self.label_key)
        hidden = out.last_hidden_state
        if labels is None:
            return HeadOutput(logits=self.logits(hidden))  # (B, T, V)
        selected = labels.ne(IGNORE)
        return self.loss_at(hidden[selected], labels[selected])


class CausalLMHead(_VocabularyHead):
    """GPT-1 §3.1 / GPT-2: next-token prediction with the output projection tied to the input embedding."""

    kind = "clm"
    default_label_key = "lm_labels"
    perplexity_key = "perplexity"  # the LM's headline metric (GPT-2 §3), unprefixed in metrics.jsonl

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = None
        if config.tie_word_embeddings:
            self.decoder.weight = backbone.input_embeddings().weight

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=self.logits(out.last_hidden_state))  # (B, T, V)
        # position t predicts token t+1: shift the labels rather than slicing (B, T, V) logits
        targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE)  # (B, T)
        selected = targets.ne(IGNORE)
        return self.loss_at(out.last_hidden_state[selected], targets[selected])


class Seq2SeqLMHead(_VocabularyHead):
    """The decoder's output projection of an encoder-decoder (Vaswani et al. §3.4: tied to the one token
    table shared by encoder and decoder) plus a vocabulary bias (HF Marian's `final_logits_bias`; T5, whose
    config has `bias=False`, has none). With `output_scale` (T5 v1.0) the decoder's output is multiplied by
    d_model^-0.5 before the projection: the token table is ~N(0, 1), so unscaled logits would be too large.

    Decoder position t predicts `labels[t]`: unlike the GPT head nothing is shifted here, because the
    decoder's inputs are already the labels shifted right behind `decoder_start_token_id` (built by the
    data collator). `label_smoothing` (Vaswani et al. §5.4: 0.1) smooths over the full vocabulary, as
    `F.cross_entropy(label_smoothing=...)` does; the reported loss is the smoothed one being optimised.
    """

    kind = "seq2seq_lm"
    default_label_key = "labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, *, label_smoothing: float = 0.0, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.output_projection = True  # init role (lmforge.nn.init.fan_in_init)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.bias else None
        self.output_scale = config.hidden_size ** -0.5 if config.output_scale else None
        if config.tie_word_embeddings:
            self.decoder.weight = backbone.input_embeddings().weight

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "label_smoothing": self.label_smoothing}

    def transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden if self.output_scale is None else hidden * self.output_scale

    def metrics(self, name: str, sums: dict[str, float]) -> dict[str, float]:
        """Loss and accuracy; no perplexity when smoothing, since exp(smoothed loss) is not one."""
        out = super().metrics(name, sums)
        if self.label_smoothing:
            out.pop(self.perplexity_key.format(name=name), None)
        return out

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=self.logits(out.last_hidden_state))  # (B, T, V)
        selected = labels.ne(IGNORE)  # (B, T): target padding is IGNORE
        return self.loss_at(out.last_hidden_state[selected], labels[selected])


class PermutationLMHead(_VocabularyHead):
    """XLNet §2.3: the query stream's state g_{z_t} predicts x_{z_t} through a Linear with a bias tied
    to the token table (the reference's `lm_loss`). Reads the query stream (B, M, H) when the backbone
    ran one (`target_mapping` given), else the content stream, as HF's XLNetLMHeadModel; labels line
    up with whichever it reads, IGNORE where nothing is predicted."""

    kind = "plm"
    default_label_key = "plm_labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        if config.tie_word_embeddings:
            self.decoder.weight = backbone.input_embeddings().weight

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        query = getattr(out, "query", None)
        hidden = query if query is not None else out.last_hidden_state
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=self.logits(hidden))  # (B, M or T, V)
        if labels.shape != hidden.shape[:2]:
            raise ValueError(f"{self.label_key} {tuple(labels.shape)} does not line up with the "
                             f"{'query' if query is not None else 'content'} stream {tuple(hidden.shape[:2])}")
        selected = labels.ne(IGNORE)
        return self.loss_at(hidden[selected], labels[selected])
