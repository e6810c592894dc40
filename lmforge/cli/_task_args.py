"""Task-reading options shared by `lmforge finetune`, `evaluate` and `predict`."""

from __future__ import annotations

import argparse

from lmforge.tasks import TASK_NAMES, TaskOptions


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help=f"one of: {', '.join(TASK_NAMES)}")
    group = parser.add_argument_group("data reading (defaults: as the benchmark ships)")
    group.add_argument("--text-column", help="generic classification: column with the text")
    group.add_argument("--text-pair-column", help="generic classification: column with the second text")
    group.add_argument("--label-column", help="generic classification: column with the label")
    group.add_argument("--regression", action="store_true", default=None,
                       help="generic data: a numeric label (MSE head, Pearson/Spearman)")
    group.add_argument("--format", choices=("tsv", "csv", "jsonl"), help="generic data: file format")
    group.add_argument("--tag-column", type=int, help="CoNLL: column of the tag (default last)")
    group.add_argument("--tag-scheme", choices=("auto", "iob1", "iob2"), help="CoNLL tag scheme")
    group.add_argument("--doc-stride", type=int, help="QA: window step in tokens (128)")
    group.add_argument("--max-query-length", type=int, help="QA: question tokens kept (64)")
    group.add_argument("--n-best", type=int, help="QA: start/end candidates searched (20)")
    group.add_argument("--max-answer-length", type=int, help="QA: longest answer in tokens (30)")
    group.add_argument("--null-score-threshold", type=float, help="SQuAD v2: null-vs-span margin (0.0)")
    group.add_argument("--train-articles", help="QA: slice of articles used for training, e.g. 0:40")
    group.add_argument("--eval-articles", help="QA: slice of articles used for evaluation, e.g. -8:")
    group.add_argument("--train-file", help="training file (overrides the task's file name under --data)")
    group.add_argument("--dev-file", help="dev file (overrides the task's file name under --data)")


_FIELDS = ("text_column", "text_pair_column", "label_column", "regression", "format", "tag_column",
           "tag_scheme", "doc_stride", "max_query_length", "n_best", "max_answer_length",
           "null_score_threshold", "train_articles", "eval_articles", "train_file", "dev_file")


def task_options(args: argparse.Namespace, base: dict | None = None) -> TaskOptions:
    """Options from the command line on top of `base` (a run's saved options)."""
    options = TaskOptions.from_dict(base or {})
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(options, name, value)
    return options
