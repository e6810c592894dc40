"""`lmforge finetune`: a pre-trained model + a task head, trained on a benchmark or the user's data."""

from __future__ import annotations

import argparse
import json

from lmforge.cli._task_args import add_task_arguments, bounded, task_options


def register(subparsers: argparse._SubParsersAction) -> None:
    from lmforge.finetune_defaults import defaults_help

    p = subparsers.add_parser(
        "finetune", help="fine-tune a pre-trained model on a task",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Values not given come from the task type's recipe (BERT §4 / A.3 grids, chosen by "
                    "measurement: lmforge/finetune_defaults.py). The best dev checkpoint is kept unless "
                    "--no-select-best.",
        epilog=defaults_help())
    add_task_arguments(p)
    p.add_argument("--model", required=True, help="pre-trained model directory (lmforge or HF)")
    p.add_argument("--data", required=True, help="task directory or file (one file: --dev-fraction is held out)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--lr", type=bounded(float, above=0), help="peak learning rate (default: by task type)")
    p.add_argument("--batch-size", type=bounded(int, least=1), help="default: by task type")
    p.add_argument("--epochs", type=bounded(float, above=0), help="default: by task type")
    p.add_argument("--warmup-ratio", type=bounded(float, least=0, below=1),
                   help="share of steps with linear warmup (default: 0.1)")
    p.add_argument("--max-length", type=bounded(int, least=8),
                   help="max tokens per input (task default: 128, CoNLL 256, SQuAD 384)")
    p.add_argument("--weight-decay", type=bounded(float, least=0), default=0.01, help="default: %(default)s")
    p.add_argument("--max-grad-norm", type=bounded(float, least=0), default=1.0,
                   help="gradient clipping, 0: off (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="default: %(default)s")
    p.add_argument("--eval-every", type=bounded(int, least=0),
                   help="steps between dev evaluations, 0: once an epoch (default: --evals-per-epoch)")
    p.add_argument("--evals-per-epoch", type=bounded(int, least=1),
                   help="dev evaluations per epoch (default: by task type)")
    p.add_argument("--select-best", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the best dev checkpoint (default) or, with --no-select-best, the final one")
    p.add_argument("--dev-fraction", type=bounded(float, least=0, below=1), default=0.1,
                   help="share of a single --data file held out as dev, seeded; 0: no dev (default: %(default)s)")
    p.add_argument("--eval-batch-size", type=bounded(int, least=1), default=128, help="default: %(default)s")
    p.add_argument("--limit", type=bounded(int, least=1), help="use the first N training examples only")
    p.add_argument("--eval-limit", type=bounded(int, least=1), help="use the first N dev examples only")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1, ...")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on CUDA)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier fine-tuning run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        task=args.task, model=args.model, data=args.data, out=args.out, lr=args.lr,
        batch_size=args.batch_size, epochs=args.epochs, warmup_ratio=args.warmup_ratio,
        max_length=args.max_length, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        seed=args.seed, eval_every=args.eval_every, evals_per_epoch=args.evals_per_epoch,
        select_best=args.select_best, dev_fraction=args.dev_fraction,
        eval_batch_size=args.eval_batch_size, limit=args.limit, eval_limit=args.eval_limit,
        device=args.device, bf16=args.bf16, progress=not args.no_progress, overwrite=args.overwrite,
        options=task_options(args),
    )
    summary = finetune(cfg)
    print(json.dumps(summary, indent=2))
    return 0
