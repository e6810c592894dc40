"""`lmforge evaluate`: score a fine-tuned run on a labelled split; prints JSON and writes it to a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli._task_args import add_task_arguments, task_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a fine-tuned model on a labelled split")
    add_task_arguments(p)
    p.add_argument("--model", required=True, help="run directory written by `lmforge finetune`")
    p.add_argument("--data", required=True, help="task directory or file")
    p.add_argument("--split", default="dev", help="dev (default), test, train, or a task split such as "
                                                  "dev_mismatched")
    p.add_argument("--out", help="where to write the metrics JSON (default RUN_DIR/eval_<task>_<split>.json)")
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, help="first N examples only")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.finetune import evaluate_examples, load_finetuned, resolve_device
    from lmforge.tasks import get_task
    from lmforge.tasks.text import load_task_tokenizer

    model, saved = load_finetuned(args.model)
    task = get_task(args.task, task_options(args, saved.get("options")))
    examples = task.read(Path(args.data), args.split)[: args.limit]
    device = resolve_device(args.device)
    tokenizer = load_task_tokenizer(args.model)
    _, scores = evaluate_examples(model.to(device), task, examples, tokenizer,
                                  args.max_length or saved.get("max_length", 128), args.batch_size, device)
    result = {"task": task.name, "split": args.split, "examples": len(examples), **scores}
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out) if args.out else Path(args.model) / f"eval_{task.name}_{args.split}.json"
    out.write_text(text + "\n")
    return 0
