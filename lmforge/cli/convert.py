"""`lmforge convert`: HuggingFace checkpoint <-> lmforge model directory (weights, config, tokenizer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmforge.cli.main import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert a HuggingFace checkpoint to an lmforge model directory, or back",
        description="Exactly one of --from-hf / --to-hf. BERT, RoBERTa, ALBERT, ELECTRA, DistilBERT, "
                    "OpenAI GPT and GPT-2 checkpoints, with the heads their `architectures` names.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-hf", metavar="HF_DIR", type=Path, help="HuggingFace model directory to read")
    source.add_argument("--to-hf", metavar="OUR_DIR", type=Path, help="lmforge model directory to export")
    parser.add_argument("--out", required=True, metavar="DIR", type=Path, help="directory to write")
    parser.add_argument("--hub-id", metavar="OWNER/NAME", default=None,
                        help="with --from-hf: the checkpoint's name on the HuggingFace Hub, recorded so that "
                             "exports of models trained from it name it as base_model in their model card")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.convert import convert_from_hf, convert_to_hf

    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out}: exists and is not a directory")
    if args.hub_id and args.from_hf is None:
        raise UserError("--hub-id goes with --from-hf (it names the HuggingFace checkpoint being read)")
    if args.from_hf is not None:
        out = convert_from_hf(args.from_hf, args.out, hub_id=args.hub_id)
        print(f"wrote lmforge model to {out}")
    else:
        out = convert_to_hf(args.to_hf, args.out)
        print(f"wrote HuggingFace model to {out}")
    return 0
