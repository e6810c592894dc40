"""`lmforge average`: one model from the last N checkpoints of a run (Vaswani et al. §6.1 averaged the
last 5 checkpoints of the base model, the last 20 of the big one), with the run's tokenizer beside it,
ready for `lmforge evaluate`, `generate` or `convert --to-hf`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmforge.cli._task_args import bounded


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("average", help="average the weights of a run's last checkpoints",
                              description=__doc__)
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory of `lmforge pretrain`")
    p.add_argument("--last", type=bounded(int, least=1), default=5,
                   help="checkpoints to average (default %(default)s); the run must keep that many "
                        "(checkpoint.keep_last)")
    p.add_argument("--out", required=True, metavar="DIR", help="the averaged model directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.average import average_last_checkpoints
    from lmforge.tokenizers import copy_tokenizer_files, has_tokenizer

    run_dir = Path(args.run)
    tokenizer = run_dir / "final"
    if not has_tokenizer(tokenizer):
        raise FileNotFoundError(f"{tokenizer}: no tokenizer to ship with the average (has the run finished?)")
    out = average_last_checkpoints(run_dir / "checkpoints", args.last, args.out)
    copy_tokenizer_files(tokenizer, out)
    print(f"average: the last {args.last} checkpoints of {run_dir} -> {out}", file=sys.stderr)
    return 0
