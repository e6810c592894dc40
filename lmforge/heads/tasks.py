"""Fine-tuning heads: sequence classification/regression, multiple choice, tagging, extractive QA."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.heads.base import Head, HeadOutput, default_scalar_mix, first_token, last_real_token, masked_mean
from lmforge.heads.lm import IGNORE
from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.nn.activations import activation
from lmforge.nn.dropout import Dropout


class SequenceClassificationHead(Head):
    """One vector per sequence -> num_labels scores; num_labels == 1 is regression (MSE).

    How the sequence vector is made follows the family (`ModelConfig.classifier_style`):
    - pooler (BERT, ALBERT): dropout over the pooled [CLS], then a Linear;
    - first_mlp (RoBERTa tanh, ELECTRA gelu, DistilBERT relu): [CLS] -> dense -> act -> Linear;
    - last_token (GPT): a bias-free Linear over the last real token;
    - last_mlp (XLNet, HF's "last" sequence summary): the last real token, <cls> -> dense -> tanh ->
      dropout -> Linear.
    - mean (ELMo): dropout over the states, their mean over real tokens, then a Linear. A biLM has no
      sentence token: its first state's forward half has read one token, its last state's backward half
      one, so the mean is the vector in which every word is seen with both directions' context.
    With a `scalar_mix` the states are ELMo's task mix of all layers (Peters et al. 2018 §3.2-3.3).
    """

    kind = "classification"

    def __init__(self, config: ModelConfig, backbone: Backbone, *, num_labels: int | None = None,
                 label_names: list[str] | None = None, style: str | None = None,
                 scalar_mix: int | None = None, standardize_layers: bool | None = None, task_rnn: int | None = None,
                 **kw: Any) -> None:
        super().__init__(config, backbone, **default_scalar_mix(config, backbone, scalar_mix, standardize_layers, task_rnn),
                         **kw)
        if num_labels is None:
            num_labels = len(label_names) if label_names else 2
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names else None
        self.style = style or config.classifier_style
        if self.style == "pooler" and getattr(backbone, "pooler", None) is None:
            raise ValueError(f"classifier style 'pooler' needs a pooler; this {config.family} model has none")
        if self.style == "pooler" and (self.mix is not None or self.rnn is not None):
            raise ValueError("classifier style 'pooler' reads the pooler, not a scalar mix or a task RNN over the states")
        self.drop = Dropout(config.classifier_dropout)
        hidden = config.hidden_size
        if self.style in ("first_mlp", "last_mlp"):
            self.dense = nn.Linear(hidden, hidden)
            self.act = activation(config.classifier_activation)
        self.out = nn.Linear(hidden, num_labels, bias=self.style != "last_token")

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "num_labels": self.num_labels, "label_names": self.label_names,
                "style": self.style}

    def scores(self, out: BackboneOutput) -> torch.Tensor:
        if self.style == "pooler":
            return self.out(self.drop(out.pooled))
        hidden = self.representation(out)
        if self.style == "first_mlp":
            x = self.drop(first_token(hidden))
            return self.out(self.drop(self.act(self.dense(x))))
        if self.style == "last_mlp":
            x = last_real_token(hidden, out.attention_mask)
            return self.out(self.drop(self.act(self.dense(x))))
        if self.style == "mean":
            return self.out(masked_mean(self.drop(hidden), out.attention_mask))
        return self.out(last_real_token(hidden, out.attention_mask))

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        logits = self.scores(out)  # (B, num_labels)
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=logits)
        if self.num_labels == 1:
            loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
        else:
            loss = F.cross_entropy(logits.float(), labels)
        return HeadOutput(logits=logits, loss=loss, labels=labels)


class GroupedSequenceHead(SequenceClassificationHead):
    """A sequence head over several sequences per example: (B, C, T) inputs run through the backbone as
    B*C sequences, and `num_choices` (C) goes to the heads in the batch to regroup the scores."""

    def backbone_inputs(self, inputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if inputs["input_ids"].dim() != 3:  # already flattened (another grouped head) or one per example
            return inputs
        batch["num_choices"] = inputs["input_ids"].shape[1]
        return {k: v.flatten(0, 1) for k, v in inputs.items()}


class SimilarityHead(GroupedSequenceHead):
    """GPT-1 §3.3 "Similarity": a left-to-right model reads the pair in both orders (the task's batching
    gives (B, 2, T) inputs); the two final states are added element-wise before the linear output layer."""

    kind = "similarity"

    def scores(self, out: BackboneOutput) -> torch.Tensor:
        states = last_real_token(out.last_hidden_state, out.attention_mask)  # (B*2, H)
        return self.out(self.drop(states.view(-1, 2, states.shape[-1]).sum(dim=1)))  # (B, num_labels)


class MultipleChoiceHead(GroupedSequenceHead):
    """SWAG (BERT §4.4): score each (context, ending) pair with one number, softmax over choices."""

    kind = "multiple_choice"

    def __init__(self, config: ModelConfig, backbone: Backbone, *, style: str | None = None, **kw: Any) -> None:
        kw.pop("num_labels", None)
        if style is None and getattr(backbone, "pooler", None) is not None:
            style = config.multiple_choice_style  # the family's choice (RoBERTa: the pooler), else None
        super().__init__(config, backbone, num_labels=1, style=style, **kw)

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        logits = self.scores(out).view(-1, batch["num_choices"])  # (B, C)
        labels = batch.get(self.label_key)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return HeadOutput(logits=logits, loss=loss, labels=labels)


class TokenClassificationHead(Head):
    """NER tagging (BERT §5.3, CoNLL-2003): a Linear over every token; -100 labels are ignored.
    With a `scalar_mix` each token's vector is ELMo's task mix of all layers, dropped out (§3.2-3.3)."""

    kind = "token_classification"

    def __init__(self, config: ModelConfig, backbone: Backbone, *, num_labels: int | None = None,
                 label_names: list[str] | None = None, scalar_mix: int | None = None,
                 standardize_layers: bool | None = None, task_rnn: int | None = None, **kw: Any) -> None:
        super().__init__(config, backbone, **default_scalar_mix(config, backbone, scalar_mix, standardize_layers, task_rnn),
                         **kw)
        if num_labels is None:
            num_labels = len(label_names) if label_names else 2
        self.num_labels = num_labels
        self.label_names = list(label_names) if label_names else None
        self.drop = Dropout(config.classifier_dropout)
        self.out = nn.Linear(config.hidden_size, num_labels)

    def spec(self) -> dict[str, Any]:
        return {**super().spec(), "num_labels": self.num_labels, "label_names": self.label_names}

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        logits = self.out(self.drop(self.representation(out)))  # (B, T, L)
        labels = batch.get(self.label_key)
        if labels is None:
            return HeadOutput(logits=logits)
        loss = F.cross_entropy(logits.reshape(-1, self.num_labels).float(), labels.reshape(-1),
                               ignore_index=IGNORE)
        return HeadOutput(logits=logits, loss=loss, labels=labels)


class SpanHead(Head):
    """Extractive QA (BERT §4.2): start and end scores per token; loss is the mean of both CEs."""

    kind = "qa"
    default_label_key = "start_positions"

    def __init__(self, config: ModelConfig, backbone: Backbone, **kw: Any) -> None:
        super().__init__(config, backbone, **kw)
        self.out = nn.Linear(config.hidden_size, 2)

    def forward(self, out: BackboneOutput, batch: dict[str, Any]) -> HeadOutput:
        logits = self.out(self.representation(out))  # (B, T, 2): start, end
        start = batch.get("start_positions")
        end = batch.get("end_positions")
        if start is None or end is None:
            return HeadOutput(logits=logits)
        seq = logits.shape[1]
        start_loss = F.cross_entropy(logits[..., 0].float(), start.clamp(0, seq), ignore_index=seq)
        end_loss = F.cross_entropy(logits[..., 1].float(), end.clamp(0, seq), ignore_index=seq)
        return HeadOutput(logits=logits, loss=(start_loss + end_loss) / 2, labels=torch.stack([start, end], -1))
