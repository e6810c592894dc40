"""`lmforge predict`: one JSON line of prediction per input of a file in the task's format."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli._task_args import add_task_arguments, task_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="predict with a fine-tuned model, one JSON line per input")
    add_task_arguments(p)
    p.add_argument("--model", required=True, help="run directory written by `lmforge finetune`")
    p.add_argument("--input", required=True, help="file in the task's format (labels optional)")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--max-length", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.finetune import label_names_of, load_finetuned, predict_logits, resolve_device
    from lmforge.tasks import get_task
    from lmforge.tasks.text import load_task_tokenizer, pad_id

    model, saved = load_finetuned(args.model)
    task = get_task(args.task, task_options(args, saved.get("options")))
    examples = task.read_inputs(Path(args.input))
    device = resolve_device(args.device)
    tokenizer = load_task_tokenizer(args.model)
    labels = label_names_of(model)
    encoded = task.encode(examples, tokenizer, args.max_length or saved.get("max_length", 128), labels,
                          train=False)
    logits = predict_logits(model.to(device), task, encoded, pad_id(tokenizer), args.batch_size, device)
    predictions = task.decode(examples, encoded, logits, labels)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for example, prediction in zip(examples, predictions):
            handle.write(json.dumps(task.prediction_record(example, prediction), ensure_ascii=False) + "\n")
    print(f"wrote {len(predictions)} predictions to {out}")
    return 0
