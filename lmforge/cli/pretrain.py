"""`lmforge pretrain --config FILE.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse

from lmforge.train.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pre-train a model (MLM+NSP, RoBERTa MLM, ALBERT SOP, ELECTRA, GPT CLM)",
        description="Pre-train from a YAML recipe (configs/*.yaml). Multi-GPU/multi-node: launch with "
                    "`torchrun --nproc_per_node N -m lmforge pretrain ...`.")
    parser.add_argument("--config", required=True, help="YAML recipe")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. optim.lr=3e-4 data.prepared_dir=data/prepared")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from the latest checkpoint in run_dir")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.pretrain import main_process, pretrain

    config = load_config(args.config, args.overrides)
    result = pretrain(config, resume=args.resume)
    if main_process() and result.final_dir is not None:
        last = next((r for r in reversed(result.history) if "loss" in r), {})
        print(f"pretrain: done at step {result.state.step}; final loss {last.get('loss', float('nan')):.4f}; "
              f"model in {result.final_dir}")
    return 0
