"""`lmforge finetune --teacher RUN_DIR [--student-layers K]`: the student and its frozen teacher
around the usual fine-tuning step (the soft-target losses are in task_distill.py).

The teacher is a finished fine-tuning run of the same task, with the student's labels and tokenizer.
It is read from RUN_DIR whenever a run starts or resumes and is never saved: the loop's checkpoints
and the finished run hold the student only, and evaluation, selection and saving see the student.
`--student-layers K` builds the student from `--model` by keeping one layer in N/K from the bottom,
as DistilBERT §3 initialises its student from the teacher (objectives/distill.py `init_from_teacher`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmforge.finetune_data import TASK_FILE
from lmforge.models import TaskModel, load_model
from lmforge.objectives.distill import init_from_teacher
from lmforge.task_distill import TaskDistillation, TaskDistillSettings
from lmforge.tasks.text import load_task_tokenizer

if TYPE_CHECKING:
    from lmforge.finetune import FinetuneConfig


def keep_layers(model: TaskModel, layers: int | None) -> TaskModel:
    """`model` with `layers` of its N layers: layer i is its layer i·N/K (DistilBERT §3, "taking one
    layer out of two"); embeddings and heads as they are. None or N: the model itself."""
    total = model.config.num_layers
    if layers is None or layers == total:
        return model
    if layers > total or total % layers:
        raise ValueError(f"--student-layers {layers} must divide the model's {total} layers "
                         f"(one layer in N/K is kept, DistilBERT §3)")
    student = TaskModel(model.config.replace(num_layers=layers), {n: h.spec() for n, h in model.heads.items()})
    if not init_from_teacher(student, model):
        raise ValueError(f"--student-layers {layers}: this model's layers cannot be taken one in "
                         f"{total // layers} (its layers share parameters)")
    return student


def settings_of(cfg: FinetuneConfig) -> TaskDistillSettings:
    return TaskDistillSettings(temperature=cfg.distill_temperature, alpha_ce=cfg.distill_alpha_ce,
                               alpha_task=cfg.distill_alpha_task)


def load_task_teacher(run_dir: str | Path, task_name: str, head: str, label_names: list[str] | None,
                      tokenizer: Any, max_length: int) -> TaskModel:
    """The fine-tuned model in `run_dir`, frozen and in eval mode, after checking that it can teach
    this student: same task, same labels, same token ids, positions for `max_length` tokens."""
    run_dir = Path(run_dir)
    where = f"--teacher {run_dir}"
    task_file = run_dir / TASK_FILE
    if not task_file.is_file():
        raise FileNotFoundError(f"{where}: not a finished fine-tuning run (no {TASK_FILE})")
    taught = json.loads(task_file.read_text()).get("task_name")
    if taught != task_name:
        raise ValueError(f"{where} was fine-tuned on {taught!r}, not {task_name!r}: the teacher must know the task")
    with torch.random.fork_rng(devices=[]):  # loading draws nothing from the student's random stream
        teacher = load_model(run_dir)
    if head not in teacher.heads:
        raise ValueError(f"{where}: the model has no {head!r} head (heads: {list(teacher.heads)})")
    teacher_labels = teacher.heads[head].spec().get("label_names")
    if teacher_labels != label_names:
        raise ValueError(f"{where} has the labels {teacher_labels}, the student's data {label_names}")
    if load_task_tokenizer(run_dir).get_vocab(with_added_tokens=True) != tokenizer.get_vocab(with_added_tokens=True):
        raise ValueError(f"{where}: its tokenizer is not --model's (the teacher must read the same token ids)")
    if max_length > teacher.backbone.max_length():
        raise ValueError(f"{where}: --max-length {max_length} exceeds the teacher's {teacher.backbone.max_length()} "
                         f"positions")
    return teacher.eval().requires_grad_(False)


def with_teacher(student: TaskModel, head: str, task_name: str, tokenizer: Any, cfg: FinetuneConfig,
                 max_length: int) -> nn.Module:
    """What the loop steps: the student alone, or with `cfg.teacher` the distillation module whose
    loss is α_ce · soft targets + α_task · the student's own loss (task_distill.py)."""
    if not cfg.teacher:
        return student
    settings = settings_of(cfg)
    labels = student.heads[head].spec().get("label_names")
    teacher = load_task_teacher(cfg.teacher, task_name, head, labels, tokenizer, max_length)
    return TaskDistillation(student, teacher, settings)
