"""What every head shares: a spec that round-trips through config.json, and an output type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.nn.scalar_mix import ScalarMix
from lmforge.nn.task_rnn import TaskRNN


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
    `scalar_mix` (the number of hidden states, or None) makes `representation` ELMo's task vector
    gamma * sum_j s_j h_j over every layer (Peters et al. 2018 §3.2 eq. 1) instead of the last layer;
    `standardize_layers` standardizes each layer's dimensions first (lmforge.nn.scalar_mix says why);
    `task_rnn` (a number of layers, or 0) runs the task's own biLSTM over that (§3.3, lmforge.nn.task_rnn).
    """

    kind: ClassVar[str]
    default_label_key: ClassVar[str] = "labels"

    def __init__(self, config: ModelConfig, backbone: Backbone, *, label_key: str | None = None,
                 loss_weight: float = 1.0, scalar_mix: int | None = None, standardize_layers: bool = False,
                 task_rnn: int = 0) -> None:
        super().__init__()
        self.label_key = label_key or self.default_label_key
        self.loss_weight = loss_weight
        self.scalar_mix = scalar_mix  # None: not asked; 0: asked not to mix (recorded in the spec)
        if standardize_layers and not scalar_mix:
            raise ValueError("standardize_layers standardizes the layers of a scalar mix; the head has none")
        self.standardize_layers = standardize_layers
        self.mix = (ScalarMix(scalar_mix, standardize_dim=config.hidden_size if standardize_layers else None)
                    if scalar_mix else None)
        self.task_rnn = task_rnn
        self.rnn = TaskRNN(config.hidden_size, task_rnn, config.classifier_dropout) if task_rnn else None

    @property
    def reads_hidden_states(self) -> bool:
        """Whether the backbone must return every layer's states for this head (TaskModel asks)."""
        return self.mix is not None

    def backbone_inputs(self, inputs: dict[str, torch.Tensor], batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The backbone's inputs shaped as this head reads its output (TaskModel asks every head before
        the backbone runs). Unchanged by default; a head that scores groups of sequences reshapes them
        here and leaves in `batch` what its forward needs to undo that."""
        return inputs

    def representation(self, out: BackboneOutput) -> torch.Tensor:
        """(B, T, H): the scalar mix of all hidden states when the head has one, else the last layer;
        through the task RNN when the head has one."""
        if self.mix is None:
            states = out.last_hidden_state
        elif out.hidden_states is None:
            raise ValueError(f"head {self.kind!r} mixes the hidden states; call the backbone with output_hidden_states")
        else:
            states = self.mix(out.hidden_states, out.attention_mask)
        return states if self.rnn is None else self.rnn(states, out.attention_mask)

    def spec(self) -> dict[str, Any]:
        spec = {"kind": self.kind, "label_key": self.label_key, "loss_weight": self.loss_weight}
        if self.scalar_mix is not None:  # only then: specs saved before the mix existed stay equal
            spec["scalar_mix"] = self.scalar_mix
        if self.standardize_layers:  # likewise: a spec saved without it reads False, as it was trained
            spec["standardize_layers"] = True
        if self.task_rnn:  # likewise
            spec["task_rnn"] = self.task_rnn
        return spec

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


def default_scalar_mix(config: ModelConfig, backbone: Backbone, scalar_mix: int | None,
                       standardize_layers: bool | None = None, task_rnn: int | None = None) -> dict[str, Any]:
    """A task head's feature settings. A spec that names no mix gets every hidden state where the config
    says task heads read the mix (ELMo, Peters et al. 2018 §3.3), standardized and through a task RNN
    where it says so too; a spec that names its mix (a saved head) keeps what it says."""
    if scalar_mix is None and getattr(config, "task_layer_mix", False):
        scalar_mix = backbone.num_hidden_states()
        if standardize_layers is None:
            standardize_layers = getattr(config, "task_layer_standardize", False)
        if task_rnn is None:
            task_rnn = getattr(config, "task_rnn_layers", 0)
    return {"scalar_mix": scalar_mix, "standardize_layers": bool(standardize_layers), "task_rnn": task_rnn or 0}


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, H) -> (B, H): the mean over real tokens."""
    if attention_mask is None:
        return hidden.mean(1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def first_token(hidden: torch.Tensor) -> torch.Tensor:
    return hidden[:, 0]  # (B, H)


def last_real_token(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """GPT classifies from the last non-padding token (its only token that has seen the whole text)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * attention_mask.long()).argmax(dim=-1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
