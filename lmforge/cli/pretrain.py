"""`lmforge pretrain --config FILE.yaml [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain", help="pre-train a model (MLM+NSP, RoBERTa MLM, ALBERT SOP, ELECTRA, GPT CLM)",
        description="Pre-train from a YAML recipe: a file, or one shipped with lmforge by name (bert, roberta, "
                    "albert, electra, gpt, quickstart, xlnet; in lmforge/recipes/). Multi-GPU/multi-node: launch with "
                    "`torchrun --nproc_per_node N -m lmforge pretrain ...`.")
    parser.add_argument("--config", required=True, metavar="FILE_OR_NAME",
                        help="YAML recipe file, or the name of a shipped recipe (e.g. bert)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the configuration (recipe + overrides, every key) and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. optim.lr=3e-4 data.prepared_dir=data/prepared")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue exactly from the newest intact checkpoint in run_dir")
    again.add_argument("--overwrite", action="store_true",
                       help="delete what an earlier run left in run_dir and start afresh "
                            "(without --resume or --overwrite a non-empty run_dir is refused)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.train.config import load_config, to_yaml

    config = load_config(args.config, args.overrides)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    from lmforge.pretrain import main_process, pretrain

    result = pretrain(config, resume=args.resume, overwrite=args.overwrite)
    if main_process() and result.final_dir is not None:
        last = next((r for r in reversed(result.history) if "loss" in r), None)
        loss = f"final loss {last['loss']:.4f}" if last else "no steps were left to train"
        print(f"pretrain: done at step {result.state.step}; {loss}; model in {result.final_dir}")
    return 0
