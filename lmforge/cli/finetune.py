"""`lmforge finetune`: a pre-trained model + a task head, trained on a benchmark or the user's data."""

from __future__ import annotations

import argparse
import json

from lmforge.cli._task_args import add_task_arguments, task_options


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a pre-trained model on a task",
                              description="Defaults follow BERT §4 / A.3: lr 3e-5, batch 32, 3 epochs, "
                                          "10%% linear warmup, weight decay 0.01.")
    add_task_arguments(p)
    p.add_argument("--model", required=True, help="pre-trained model directory (lmforge or HF)")
    p.add_argument("--data", required=True, help="task directory or file")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-length", type=int, help="max tokens per input (task default: 128, SQuAD 384)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--eval-every", type=int, default=0, help="steps between dev evaluations (0: each epoch)")
    p.add_argument("--select-best", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the best dev checkpoint (default) or the final one")
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--limit", type=int, help="use the first N training examples only")
    p.add_argument("--eval-limit", type=int, help="use the first N dev examples only")
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (default: on CUDA)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.finetune import FinetuneConfig, finetune

    if args.lr <= 0 or args.batch_size < 1 or args.epochs <= 0 or not 0 <= args.warmup_ratio < 1:
        raise ValueError("need --lr > 0, --batch-size >= 1, --epochs > 0 and 0 <= --warmup-ratio < 1")
    cfg = FinetuneConfig(
        task=args.task, model=args.model, data=args.data, out=args.out, lr=args.lr,
        batch_size=args.batch_size, epochs=args.epochs, warmup_ratio=args.warmup_ratio,
        max_length=args.max_length, weight_decay=args.weight_decay, max_grad_norm=args.max_grad_norm,
        seed=args.seed, eval_every=args.eval_every, select_best=args.select_best,
        eval_batch_size=args.eval_batch_size, limit=args.limit, eval_limit=args.eval_limit,
        device=args.device, bf16=args.bf16, progress=not args.no_progress, options=task_options(args),
    )
    summary = finetune(cfg)
    print(json.dumps(summary, indent=2))
    return 0
