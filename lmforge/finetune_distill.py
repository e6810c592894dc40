"""`lmforge finetune --teacher RUN_DIR [--student-layers K]`: the student and its frozen teacher
around the usual fine-tuning step (the soft-target losses are in task_distill.py).

The teacher is a finished fine-tuning run of the same task, with the student's labels and tokenizer.
It is read from RUN_DIR whenever a run starts or resumes and is never saved: the loop's checkpoints
and the finished run hold the student only, and evaluation, selection and saving see the student.
`--student-layers K` builds the student from `--model` by keeping one layer in N/K from the bottom,
as DistilBERT §3 initialises its student from the teacher (objectives/distill.py `init_from_teacher`).
With a teacher the student then takes the *teacher's* weights for those layers, its embeddings, pooler
and task head (`--student-init teacher`, the default): the fine-tuned teacher is what §3 starts from at
the task stage, and on SST-2 it was what made distillation beat the student alone (task_distill.py).
"""

from __future__ import annotations

import dataclasses
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
    """The run's distillation settings: the values given, TaskDistillSettings' defaults for the rest."""
    given = {"temperature": cfg.distill_temperature, "alpha_ce": cfg.distill_alpha_ce,
             "alpha_task": cfg.distill_alpha_task, "alpha_layers": cfg.distill_alpha_layers}
    return TaskDistillSettings(**{k: v for k, v in given.items() if v is not None})


def resolve(cfg: FinetuneConfig) -> FinetuneConfig:
    """`cfg` with the distillation values it left out filled in (as apply_recipe fills the recipe's),
    so that args.json records what the run used; unchanged without a teacher."""
    init = student_init(cfg)
    if not cfg.teacher:
        return cfg
    settings = settings_of(cfg)
    return dataclasses.replace(cfg, student_init=init, distill_temperature=settings.temperature,
                               distill_alpha_ce=settings.alpha_ce, distill_alpha_task=settings.alpha_task,
                               distill_alpha_layers=settings.alpha_layers)


STUDENT_INITS = ("teacher", "model")


def student_init(cfg: FinetuneConfig) -> str:
    """Where the student's weights come from: "teacher" (its layers one in N/K, embeddings, pooler and
    task head) or "model" (--model's layers, a new task head). None: the teacher's when there is one."""
    init = cfg.student_init or ("teacher" if cfg.teacher else "model")
    if init not in STUDENT_INITS:
        raise ValueError(f"--student-init {init!r}: expected one of {', '.join(STUDENT_INITS)}")
    if init == "teacher" and not cfg.teacher:
        raise ValueError("--student-init teacher needs --teacher RUN_DIR")
    return init


def init_from_task_teacher(student: TaskModel, teacher: TaskModel, where: str) -> None:
    """DistilBERT §3's initialisation at the task stage: the student (--model cut to K layers) takes
    the fine-tuned teacher's embeddings, layers g(1..K) - 1 (one in N/K from the bottom, as
    `keep_layers`), pooler and task head, so it starts from what the teacher learnt on the task."""
    s, t = student.config, teacher.config
    if t.num_layers % s.num_layers:
        raise ValueError(f"--student-init teacher: the student's {s.num_layers} layers must divide the teacher's "
                         f"{t.num_layers} ({where})")
    try:
        copied = init_from_teacher(student, teacher)
    except ValueError as err:  # a tensor of the student's the teacher does not have
        raise ValueError(f"--student-init teacher ({where}): {err}; or use --student-init model") from None
    if not copied:
        raise ValueError(f"--student-init teacher: the student's sizes are not the teacher's ({where}); "
                         f"use --student-init model")


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
    loss is α_ce · soft targets + α_task · the student's own loss (+ α_layers · TinyBERT's layer
    losses; task_distill.py). The student is initialised from the teacher here unless
    `--student-init model` (a resumed run then loads its checkpoint over it)."""
    init = student_init(cfg)
    if not cfg.teacher:
        return student
    settings = settings_of(cfg)
    labels = student.heads[head].spec().get("label_names")
    teacher = load_task_teacher(cfg.teacher, task_name, head, labels, tokenizer, max_length)
    if init == "teacher":
        init_from_task_teacher(student, teacher, f"--teacher {cfg.teacher}")
    return TaskDistillation(student, teacher, settings)
