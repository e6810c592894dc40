"""Task-reading options shared by `lmforge finetune`, `evaluate` and `predict`.

Registering them imports nothing heavy (lmforge.tasks pulls in torch): the choices come from
lmforge.choices, and lmforge.tasks is imported only when the options are used.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from lmforge.choices import TASK_DATA_FORMATS, TASK_NAMES, TEXT_TASKS

if TYPE_CHECKING:
    from lmforge.tasks import Task, TaskOptions


def bounded(kind: type, least: float | None = None, above: float | None = None,
            below: float | None = None) -> Callable[[str], float]:
    """An argparse `type` that converts and range-checks (least <= x, above < x, x < below), so that
    `--limit -5` is a usage error (exit 2) instead of a run on all but five examples."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if least is not None and value < least:
            raise argparse.ArgumentTypeError(f"{value} must be >= {least}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{value} must be > {above}")
        if below is not None and value >= below:
            raise argparse.ArgumentTypeError(f"{value} must be < {below}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_task_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`required=False` (evaluate, predict): the task comes from the run's task.json; --task is checked."""
    parser.add_argument("--task", required=required,
                        help=f"one of: {', '.join(TASK_NAMES)}; with an encoder-decoder (T5), text to text: "
                             f"{', '.join(TEXT_TASKS)}" + ("" if required else
                                                                   " (default: the task the run was trained on)"))
    group = parser.add_argument_group("data reading (defaults: as the benchmark ships)")
    group.add_argument("--text-column", help="generic classification: column with the text")
    group.add_argument("--text-pair-column", help="generic classification: column with the second text")
    group.add_argument("--label-column", help="generic classification: column with the label")
    group.add_argument("--regression", action="store_true", default=None,
                       help="generic data: a numeric label (MSE head, Pearson/Spearman)")
    group.add_argument("--format", choices=TASK_DATA_FORMATS,
                       help="generic data: file format (default: from the suffix; parquet/arrow need "
                            "pip install 'lmforge[datasets]')")
    group.add_argument("--tag-column", type=int, help="CoNLL: column of the tag (default last)")
    group.add_argument("--tag-scheme", choices=("auto", "iob1", "iob2"), help="CoNLL tag scheme")
    group.add_argument("--doc-stride", type=bounded(int, least=1), help="QA: window step in tokens (128)")
    group.add_argument("--max-query-length", type=bounded(int, least=1), help="QA: question tokens kept (64)")
    group.add_argument("--n-best", type=bounded(int, least=1), help="QA: start/end candidates searched (20)")
    group.add_argument("--max-answer-length", type=bounded(int, least=1), help="QA: longest answer in tokens (30)")
    group.add_argument("--null-score-threshold", type=float, help="SQuAD v2: null-vs-span margin (0.0)")
    group.add_argument("--train-articles", help="QA: slice of articles used for training, e.g. 0:40")
    group.add_argument("--eval-articles", help="QA: slice of articles used for evaluation, e.g. -8:")
    group.add_argument("--source-column", help="text2text (T5): column with the input text")
    group.add_argument("--target-column", help="text2text (T5): column with the output text")
    group.add_argument("--train-file", help="training file (overrides the task's file name under --data)")
    group.add_argument("--dev-file", help="dev file (overrides the task's file name under --data)")


_FIELDS = ("text_column", "text_pair_column", "label_column", "regression", "format", "tag_column",
           "tag_scheme", "doc_stride", "max_query_length", "n_best", "max_answer_length",
           "null_score_threshold", "train_articles", "eval_articles", "source_column", "target_column",
           "train_file", "dev_file")


def task_options(args: argparse.Namespace, base: dict | None = None) -> TaskOptions:
    """Options from the command line on top of `base` (a run's saved options)."""
    from lmforge.tasks import TaskOptions

    options = TaskOptions.from_dict(base or {})
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(options, name, value)
    return options


def saved_task(args: argparse.Namespace, saved: dict) -> Task:
    """The task a run was fine-tuned on (its task.json), with its reading options; a --task naming another
    task is refused, since the head's labels (an encoder-decoder's label words) mean nothing there. A run
    of an encoder-decoder (T5) reads its task as text to text, as `lmforge finetune` trained it."""
    from lmforge import text_to_text
    from lmforge.tasks import get_task

    trained = saved.get("task")
    if trained is None:
        raise ValueError(f"{args.model}: task.json names no task")
    text = text_to_text.is_encoder_decoder(args.model)
    name = text_to_text.text_task_key if text else (lambda task: get_task(task).name)
    if args.task is not None and name(args.task) != name(trained):
        raise ValueError(f"{args.model} was fine-tuned for {trained!r}, not {args.task!r}; "
                         "drop --task or fine-tune a model for it")
    make = text_to_text.get_text_task if text else get_task
    return make(trained, task_options(args, saved.get("options")))
