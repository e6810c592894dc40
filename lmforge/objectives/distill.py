"""General (pre-training) distillation, DistilBERT (Sanh et al. 2019): a small student learns from a
frozen teacher on the teacher's own pre-training task.

- §2: the student is trained with a linear combination of the distillation loss L_ce (soft targets
  of the teacher at temperature T, every real token), the masked-LM loss L_mlm and a cosine loss
  L_cos aligning the directions of the student's and the teacher's last hidden states. Weights and
  temperature are the released recipe's (`--alpha_ce 5.0 --alpha_mlm 2.0 --alpha_cos 1.0
  --temperature 2.0`, huggingface/transformers examples/research_projects/distillation).
- §3: dynamic masking as RoBERTa, no NSP: the examples are the MLM objective's.
- §3 "Student initialization": the student takes one layer out of two of the teacher (same width).

The teacher is any BERT-family directory lmforge loads (its own runs or HuggingFace checkpoints).
It is never saved: checkpoints hold the student only, and a resumed run reloads the teacher from
`distill.teacher`. TinyBERT's layer-wise distillation (`objectives/tinybert.py`) shares the
teacher, student and initialisation code here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.heads import Head
from lmforge.models import TaskModel
from lmforge.models.backbone import BackboneOutput
from lmforge.models.task_model import ModelOutput
from lmforge.nn.soft_cross_entropy import linear_soft_cross_entropy
from lmforge.objectives.mlm import MaskedLM

if TYPE_CHECKING:
    from lmforge.train.config import PretrainConfig

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class DistillSettings:
    """The `distill:` config block. The student is the teacher's architecture with `model.overrides`
    (e.g. `model.overrides.num_layers=3`), as with `model.init_from`; the preset is not used."""

    teacher: str = ""  # an lmforge or HuggingFace model directory (BERT family)
    init_from_teacher: bool = True  # DistilBERT §3: one layer out of two (same width, layers divide)
    temperature: float = 2.0  # DistilBERT's T for L_ce
    alpha_ce: float = 5.0  # DistilBERT: weight of the soft-target loss L_ce
    alpha_mlm: float = 2.0  # weight of the student's own MLM loss
    alpha_cos: float = 1.0  # weight of the cosine loss on the last hidden states
    tinybert_pred_weight: float = 1.0  # TinyBERT eq. 11: λ of the prediction layer (0 = layers only)
    tinybert_temperature: float = 1.0  # TinyBERT §4.2: t = 1 for the prediction-layer loss

    def __post_init__(self) -> None:
        if self.temperature <= 0 or self.tinybert_temperature <= 0:
            raise ValueError("distill.temperature and distill.tinybert_temperature must be > 0")
        weights = (self.alpha_ce, self.alpha_mlm, self.alpha_cos, self.tinybert_pred_weight)
        if min(weights) < 0:
            raise ValueError(f"distill loss weights must be >= 0, got {weights}")


# -------------------------------------------------------------------------------- teacher, student
def load_teacher(directory: str) -> TaskModel:
    """The frozen teacher: any model directory lmforge loads, in eval mode, no gradients."""
    from lmforge.convert import load_pretrained

    if not directory:
        raise ValueError("distill.teacher is not set (an lmforge or HuggingFace model directory)")
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"distill.teacher={directory}: not a directory")
    teacher = load_pretrained(directory)
    if not isinstance(teacher.config, ModelConfig) or teacher.config.causal:
        raise ValueError(f"distill.teacher={directory}: needs an encoder (BERT family) teacher")
    teacher.eval().requires_grad_(False)
    return teacher


def student_config(teacher: ModelConfig, run: PretrainConfig, data_vocab: int) -> ModelConfig:
    """The teacher's architecture with `model.overrides` applied (fewer layers, narrower)."""
    student = teacher.replace(**run.model.overrides) if run.model.overrides else teacher
    if data_vocab > teacher.vocab_size or student.vocab_size != teacher.vocab_size:
        raise ValueError(f"distill.teacher={run.distill.teacher}: teacher vocabulary {teacher.vocab_size}, student "
                         f"{student.vocab_size}, data {data_vocab}: prepare the data with the teacher's tokenizer "
                         f"and keep the student's vocabulary the teacher's")
    return student


def mlm_head(model: TaskModel) -> Head | None:
    """The model's masked-LM head, whatever its name (HF BertForMaskedLM loads as "mlm")."""
    return next((head for head in model.heads.values() if head.kind == "mlm"), None)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student layer m (1-based) learns from teacher layer g(m) = m · N / M: TinyBERT §4.3's uniform
    strategy; 0 is the embedding layer. DistilBERT §3 takes the same stride ("one layer out of
    two"), anchored at the bottom so that layer i starts from teacher layer i · N / M."""
    if student_layers > teacher_layers or teacher_layers % student_layers:
        raise ValueError(f"the student's {student_layers} layers must divide the teacher's {teacher_layers} "
                         f"(uniform layer map, TinyBERT §4.3)")
    stride = teacher_layers // student_layers
    return [m * stride for m in range(student_layers + 1)]


def init_from_teacher(student: TaskModel, teacher: TaskModel) -> bool:
    """DistilBERT §3: copy the teacher's embeddings, every other (every N/M-th) layer and the heads
    both have into the student, when the widths agree. Returns whether it did."""
    s, t = student.config, teacher.config  # any family's config: the fields it lacks count as equal
    same_width = all(getattr(s, f, None) == getattr(t, f, None) for f in
                     ("hidden_size", "embedding_size", "intermediate_size", "num_heads"))
    shared = getattr(s, "num_blocks", s.num_layers) != s.num_layers or getattr(t, "num_blocks", t.num_layers) != t.num_layers
    if not same_width or shared or t.num_layers % s.num_layers:
        log.info("distill: student initialised from scratch (width or layer count does not match the teacher)")
        return False
    stride = t.num_layers // s.num_layers
    source = teacher.state_dict()
    target = student.state_dict()
    taken: dict[str, torch.Tensor] = {}
    for name in target:
        from_name = name
        if name.startswith("backbone.layers."):
            index, rest = name[len("backbone.layers."):].split(".", 1)
            from_name = f"backbone.layers.{int(index) * stride}.{rest}"
        if from_name in source and source[from_name].shape == target[name].shape:
            taken[name] = source[from_name]
    missing = [f"{k} {tuple(target[k].shape)}" for k in target if k.startswith("backbone.") and k not in taken]
    if missing:
        raise ValueError(f"distill: the teacher has no tensor of the student's shape for {', '.join(missing[:3])}; "
                         f"keep the teacher's sizes there or set distill.init_from_teacher=false")
    student.load_state_dict(taken, strict=False)
    return True


class Distillation(nn.Module):
    """Teacher + student. The teacher stays in eval mode whatever the trainer asks (its dropout off);
    only the student (and any learned projections) receives gradients and is saved."""

    def __init__(self, student: TaskModel, teacher: TaskModel) -> None:
        super().__init__()
        if student.config.vocab_size != teacher.config.vocab_size:
            raise ValueError(f"student vocabulary {student.config.vocab_size} != teacher's "
                             f"{teacher.config.vocab_size}: they must share the tokenizer")
        self.student = student
        self.teacher = teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> Distillation:
        super().train(mode)
        self.teacher.eval()
        return self

    def submodels(self) -> dict[str, TaskModel]:
        return {"": self.student}

    def run_both(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 token_type_ids: torch.Tensor | None, **outputs: bool) -> tuple[BackboneOutput, BackboneOutput]:
        """Both backbones on the same batch; the teacher without autograd."""
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        with torch.no_grad():
            teacher = self.teacher.backbone(**inputs, **outputs)
        return self.student.backbone(**inputs, **outputs), teacher


def real_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T) bool: positions holding a token, not padding."""
    return attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)


def prediction_loss(student: Head, teacher: Head, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Soft-target loss of the two MLM heads on (N, H_s) / (N, H_t) hidden rows, chunked over the
    vocabulary (neither (N, V) logit matrix is materialised)."""
    with torch.no_grad():
        target = teacher.transform(teacher_hidden)
    return linear_soft_cross_entropy(student.transform(student_hidden), student.decoder.weight, student.bias,
                                     target, teacher.decoder.weight, teacher.bias, temperature)


# -------------------------------------------------------------------------------- DistilBERT
class DistilBert(Distillation):
    """L = α_ce L_ce + α_mlm L_mlm + α_cos L_cos (DistilBERT §2)."""

    def __init__(self, student: TaskModel, teacher: TaskModel, settings: DistillSettings) -> None:
        super().__init__(student, teacher)
        self.settings = settings
        if settings.alpha_ce > 0 and mlm_head(teacher) is None:
            raise ValueError(f"distill.teacher={settings.teacher} has no masked-LM head for the soft targets "
                             f"(L_ce); set distill.alpha_ce=0 or use a teacher with one (e.g. BertForMaskedLM)")
        if settings.alpha_cos > 0 and student.config.hidden_size != teacher.config.hidden_size:
            raise ValueError(f"distill.alpha_cos needs the student's width {student.config.hidden_size} to be the "
                             f"teacher's {teacher.config.hidden_size}; set distill.alpha_cos=0 for a narrower student")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, mlm_labels: torch.Tensor | None = None,
                **_: Any) -> ModelOutput:
        if mlm_labels is None:
            raise ValueError("distillation needs mlm_labels (the masked positions) in the batch")
        settings = self.settings
        student, teacher = self.run_both(input_ids, attention_mask, token_type_ids)
        real = real_tokens(input_ids, attention_mask)
        s_last, t_last = student.last_hidden_state[real], teacher.last_hidden_state[real]  # (N, H) each
        heads = {}
        loss = s_last.new_zeros((), dtype=torch.float32)
        if settings.alpha_mlm > 0:
            mlm = self.student.heads["mlm"](student, {"mlm_labels": mlm_labels})
            heads["mlm"] = mlm
            loss = loss + settings.alpha_mlm * mlm.loss
        if settings.alpha_ce > 0:
            ce = prediction_loss(self.student.heads["mlm"], mlm_head(self.teacher), s_last, t_last,
                                 settings.temperature)
            loss = loss + settings.alpha_ce * ce
        if settings.alpha_cos > 0:  # CosineEmbeddingLoss with target 1: mean(1 - cos)
            cos = 1.0 - F.cosine_similarity(s_last.float(), t_last.float(), dim=-1).mean()
            loss = loss + settings.alpha_cos * cos
        return ModelOutput(backbone=student, heads=heads, loss=loss)


def check_teacher_tokenizer(run: PretrainConfig) -> None:
    """A teacher that ships a tokenizer must have the one the data was prepared with: the same
    vocabulary size with other token ids would distill from a teacher reading different text."""
    from lmforge.tokenizers import has_tokenizer

    teacher = Path(run.distill.teacher)
    if not run.data.prepared_dir or not has_tokenizer(teacher):
        return
    from lmforge.pretrain import check_tokenizer_matches_data, read_manifest  # pretrain imports objectives

    prepared = Path(run.data.prepared_dir)
    check_tokenizer_matches_data(teacher, read_manifest(prepared), prepared, "distill.teacher")


def build_student(objective: MaskedLM, model: ModelConfig, run: PretrainConfig,
                  heads: dict[str, dict[str, Any]]) -> tuple[TaskModel, TaskModel]:
    """Teacher loaded, student built from its architecture, checked against the objective and
    initialised from the teacher (DistilBERT §3) when `distill.init_from_teacher`."""
    teacher = load_teacher(run.distill.teacher)
    check_teacher_tokenizer(run)
    config = student_config(teacher.config, run, model.vocab_size)
    objective.check_model(config)
    student = TaskModel(config, heads)
    if run.distill.init_from_teacher:
        init_from_teacher(student, teacher)
    return student, teacher


@dataclass(frozen=True)
class Distill(MaskedLM):
    """DistilBERT general distillation on the MLM examples (dynamic masking, RoBERTa §4.1)."""

    kind: ClassVar[str] = "distill"
    needs_teacher: ClassVar[bool] = True  # the student starts from distill.teacher, not model.init_from

    def build_model(self, model: ModelConfig, run: PretrainConfig) -> tuple[nn.Module, dict[str, TaskModel]]:
        settings = run.distill
        uses_head = settings.alpha_mlm > 0 or settings.alpha_ce > 0
        student, teacher = build_student(self, model, run, self.heads if uses_head else {})
        distiller = DistilBert(student, teacher, settings)
        return distiller, distiller.submodels()
