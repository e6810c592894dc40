"""`lmforge predict`: one JSON line of prediction per input of a file in the task's format."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmforge.cli._task_args import add_task_arguments, bounded, saved_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predict with a fine-tuned model, one JSON line per input")
    add_task_arguments(p, required=False)
    p.add_argument("--model", required=True, help="run directory written by `lmforge finetune`")
    p.add_argument("--input", required=True, help="file in the task's format (labels optional)")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--max-length", type=bounded(int, least=8), help="default: the run's")
    p.add_argument("--batch-size", type=bounded(int, least=1), default=128, help="default: %(default)s")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge import finetune_inputs, gpt_finetuning
    from lmforge.finetune import load_finetuned, predict_examples, resolve_device
    from lmforge.tasks.text import load_task_tokenizer

    model, saved = load_finetuned(args.model)
    task = gpt_finetuning.task_for(model, saved_task(args, saved))
    examples = task.read_inputs(Path(args.input))
    device = resolve_device(args.device)
    tokenizer = load_task_tokenizer(args.model)
    task = finetune_inputs.task_for(model, tokenizer, task)
    predictions = predict_examples(model.to(device), task, examples, tokenizer,
                                   args.max_length or saved.get("max_length", 128), args.batch_size, device,
                                   progress=not args.no_progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for example, prediction in zip(examples, predictions):
            handle.write(json.dumps(task.prediction_record(example, prediction), ensure_ascii=False) + "\n")
    print(f"wrote {len(predictions)} predictions to {out}", file=sys.stderr)
    return 0
