"""`lmforge evaluate`: score a fine-tuned run on a labelled split. Stdout carries only the JSON result
(progress and messages go to stderr), which is also written to a file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmforge.cli._task_args import add_task_arguments, bounded, saved_task


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a fine-tuned model on a labelled split, or a language "
                                               "model's perplexity on a text file (--task perplexity)")
    add_task_arguments(p, required=False)
    p.add_argument("--model", required=True, help="run directory written by `lmforge finetune`; with "
                                                  "--task perplexity a pre-trained CLM/MLM (lmforge or HF)")
    p.add_argument("--data", help="task directory or file (required unless --task perplexity)")
    p.add_argument("--input", help="--task perplexity: UTF-8 text file to score")
    p.add_argument("--stride", type=bounded(int, least=1),
                   help="--task perplexity: tokens between window starts (default: half a window)")
    p.add_argument("--max-tokens", type=bounded(int, least=2),
                   help="--task perplexity: score only the first N tokens of --input")
    p.add_argument("--split", default="dev", help="dev (default), test, train, or a task split such as "
                                                  "dev_mismatched")
    p.add_argument("--out", help="where to write the metrics JSON (default RUN_DIR/eval_<task>_<split>.json)")
    p.add_argument("--max-length", type=bounded(int, least=8), help="default: the run's")
    p.add_argument("--batch-size", type=bounded(int, least=1), default=128, help="default: %(default)s")
    p.add_argument("--limit", type=bounded(int, least=1), help="first N examples only")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.task or "").lower() == "perplexity":
        return run_perplexity(args)
    if not args.data:
        raise ValueError("--data is required (the labelled data to score)")
    from lmforge import finetune_inputs, gpt_finetuning
    from lmforge.finetune import evaluate_examples, load_finetuned, resolve_device
    from lmforge.finetune_data import saved_split
    from lmforge.tasks.text import load_task_tokenizer

    model, saved = load_finetuned(args.model)
    task = gpt_finetuning.task_for(model, saved_task(args, saved))
    examples = saved_split(task, Path(args.data), args.split, saved)[: args.limit]
    device = resolve_device(args.device)
    tokenizer = load_task_tokenizer(args.model)
    task = finetune_inputs.task_for(model, tokenizer, task)
    _, scores = evaluate_examples(model.to(device), task, examples, tokenizer,
                                  args.max_length or saved.get("max_length", 128), args.batch_size, device,
                                  progress=not args.no_progress)
    result = {"task": task.name, "split": args.split, "examples": len(examples), "metric_scale": "percent",
              **scores}
    text = json.dumps(result, indent=2)
    print(text)
    out = Path(args.out) if args.out else Path(args.model) / f"eval_{task.name}_{args.split}.json"
    out.write_text(text + "\n")
    return 0


def run_perplexity(args: argparse.Namespace) -> int:
    """CLM perplexity over strided windows, or MLM pseudo-perplexity (lmforge/perplexity.py)."""
    from lmforge.convert import load_pretrained
    from lmforge.finetune import resolve_device
    from lmforge.perplexity import PerplexityConfig, perplexity
    from lmforge.tasks.text import load_task_tokenizer

    if not args.input:
        raise ValueError("--task perplexity needs --input FILE (the text to score)")
    cfg = PerplexityConfig(max_length=args.max_length, stride=args.stride, batch_size=args.batch_size,
                           max_tokens=args.max_tokens, progress=not args.no_progress)
    result = perplexity(load_pretrained(args.model), load_task_tokenizer(args.model), args.input, cfg,
                        resolve_device(args.device))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0
