"""TinyBERT general distillation (Jiao et al. 2020 §3.1-3.3): the student imitates the teacher layer
by layer, not only at the output.

- §3.1 layer map: student layer m learns from teacher layer g(m); the uniform strategy of §4.3,
  g(m) = m · N / M, with g(0) = 0 the embedding layer (`objectives.distill.layer_map`, shared with DistilBERT's
  student initialisation).
- eq. 7 attention-based distillation: MSE between the student's and the teacher's attention
  scores, per head, *before* the softmax (the paper finds it converges faster than on the
  probabilities). Padding keys are zeroed in both, as TinyBERT's code does (its scores there hold
  the -10000 of the additive mask; ours are returned before masking).
- eq. 8 hidden-state distillation: MSE(H^S W_h, H^T), W_h a learned (d', d) projection shared by
  the layers, so a narrower student can match a wider teacher.
- eq. 9 embedding-layer distillation: MSE(E^S W_e, E^T), W_e its own projection.
- eq. 10 prediction-layer distillation: soft cross-entropy between the MLM logits at temperature
  t = 1 (§4.2), every real token, chunked over the vocabulary.
- eq. 11: all of them summed with λ_m = 1; `distill.tinybert_pred_weight` is λ of the prediction
  layer (0 for a teacher without an MLM head, e.g. a sentence-transformers checkpoint).

The projections are a model of their own (arch "tinybert-projections"), saved beside the student
(`checkpoints/step-N/projections/`, `final-projections/`) by the same code that checkpoints every
sub-model, so a resumed run continues them exactly; TinyBERT's task-specific stage starts from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.config import CONFIG_CLASSES, ModelConfig
from lmforge.models import TaskModel
from lmforge.models.registry import register_backbone
from lmforge.models.task_model import ModelOutput
from lmforge.nn.init import init_weights
from lmforge.objectives.distill import (
    Distillation,
    DistillSettings,
    build_student,
    layer_map,
    mlm_head,
    prediction_loss,
    real_tokens,
)
from lmforge.objectives.mlm import MaskedLM

if TYPE_CHECKING:
    from lmforge.train.config import PretrainConfig

PROJECTIONS = "tinybert-projections"


@dataclass(frozen=True)
class ProjectionConfig:
    """What `config.json` of the projections holds: the student's and the teacher's widths."""

    arch: ClassVar[str] = PROJECTIONS
    student_size: int
    teacher_size: int
    initializer_range: float = 0.02  # BERT's N(0, 0.02), as TinyBERT's `init_bert_weights`
    scaled_residual_init: bool = False  # read by init_weights

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectionConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown ProjectionConfig fields: {unknown}")
        return cls(**data)


class HiddenProjections(nn.Module):
    """W_e (eq. 9) and W_h (eq. 8): student width -> teacher width. Registered as a backbone arch
    only so that a TaskModel (heads: none) holds it and it is saved and loaded like any model; it
    reads no batch (`input_names` is empty) and is called by TinyBert on the student's states."""

    input_names: tuple[str, ...] = ()
    pooler = None

    def __init__(self, config: ProjectionConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Linear(config.student_size, config.teacher_size)  # W_e
        self.hidden = nn.Linear(config.student_size, config.teacher_size)  # W_h
        if init:
            init_weights(self, config)  # type: ignore[arg-type]  (reads initializer_range only)

    def shard_units(self) -> list[nn.Module]:
        return []

    def forward(self, states: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The student's hidden states (embeddings first), each (B, T, d') -> (B, T, d)."""
        return (self.embedding(states[0]), *(self.hidden(h) for h in states[1:]))


CONFIG_CLASSES[PROJECTIONS] = ProjectionConfig
register_backbone(PROJECTIONS, HiddenProjections)


def key_padding(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, T) scores with the padding keys set to 0 (TinyBERT zeroes the masked positions)."""
    return scores.masked_fill(~real[:, None, None, :], 0.0)


def layer_losses(student: Any, teacher: Any, real: torch.Tensor, layers: list[int],
                 project: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]) -> torch.Tensor:
    """L_embd + Σ_m (L_attn + L_hidn) over the mapped layers (eqs. 7-9), each an MSE mean.

    `student`/`teacher`: backbone outputs with hidden states and attention scores; `layers`: g(0..M)
    (`layer_map`); `project`: the student's states (embeddings first) at the teacher's width (W_e, W_h;
    the identity when the widths agree, as in the task stage of a student cut from its teacher)."""
    projected = project(student.hidden_states)  # embeddings + M layers, (B, T, d) each
    loss = F.mse_loss(projected[0].float(), teacher.hidden_states[0].float())
    for m in range(1, len(layers)):
        g = layers[m]
        s_att, t_att = key_padding(student.attentions[m - 1], real), key_padding(teacher.attentions[g - 1], real)
        loss = loss + F.mse_loss(s_att.float(), t_att.float())
        loss = loss + F.mse_loss(projected[m].float(), teacher.hidden_states[g].float())
    return loss


class TinyBert(Distillation):
    """Σ_m λ_m L_layer(S_m, T_g(m)) (eq. 11): embeddings, every student layer, the prediction layer."""

    def __init__(self, student: TaskModel, teacher: TaskModel, projections: TaskModel,
                 settings: DistillSettings) -> None:
        super().__init__(student, teacher)
        s, t = student.config, teacher.config
        if s.num_heads != t.num_heads:
            raise ValueError(f"TinyBERT compares attention head by head (eq. 7): the student's num_heads "
                             f"{s.num_heads} must be the teacher's {t.num_heads}")
        self.map = layer_map(s.num_layers, t.num_layers)  # g(0..M)
        self.settings = settings
        self.projections = projections
        if settings.tinybert_pred_weight > 0 and mlm_head(teacher) is None:
            raise ValueError(f"distill.teacher={settings.teacher} has no masked-LM head for the prediction layer "
                             f"(eq. 10); set distill.tinybert_pred_weight=0")

    def submodels(self) -> dict[str, TaskModel]:
        return {"": self.student, "projections": self.projections}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, mlm_labels: torch.Tensor | None = None,
                **_: Any) -> ModelOutput:
        student, teacher = self.run_both(input_ids, attention_mask, token_type_ids,
                                         output_hidden_states=True, output_attentions=True)
        real = real_tokens(input_ids, attention_mask)
        loss = layer_losses(student, teacher, real, self.map, self.projections.backbone)
        heads = {}
        weight = self.settings.tinybert_pred_weight
        if weight > 0:
            head = self.student.heads["mlm"]
            s_last, t_last = student.last_hidden_state[real], teacher.last_hidden_state[real]  # (N, d'), (N, d)
            loss = loss + weight * prediction_loss(head, mlm_head(self.teacher), s_last, t_last,
                                                   self.settings.tinybert_temperature)
            if mlm_labels is not None:  # the student's MLM accuracy, a metric only (not in eq. 11)
                with torch.no_grad():
                    heads["mlm"] = head(student, {"mlm_labels": mlm_labels})
        return ModelOutput(backbone=student, heads=heads, loss=loss)


@dataclass(frozen=True)
class TinyBertDistill(MaskedLM):
    """TinyBERT general distillation on the MLM examples (the teacher and student read the same,
    dynamically masked, input)."""

    kind: ClassVar[str] = "tinybert"
    needs_teacher: ClassVar[bool] = True

    def build_model(self, model: ModelConfig, run: PretrainConfig) -> tuple[nn.Module, dict[str, TaskModel]]:
        settings = run.distill
        student, teacher = build_student(self, model, run, self.heads if settings.tinybert_pred_weight > 0 else {})
        projections = TaskModel(ProjectionConfig(student.config.hidden_size, teacher.config.hidden_size))
        distiller = TinyBert(student, teacher, projections, settings)
        return distiller, distiller.submodels()
