"""`lmforge prepare`: raw text files -> tokenized, sharded, memory-mapped pre-training data."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("prepare", help="tokenize raw text into memory-mapped shards", description=__doc__)
    p.add_argument("--tokenizer", required=True, help="folder with tokenizer.json (or the file itself)")
    p.add_argument("--input", nargs="+", required=True, metavar="FILE_OR_GLOB",
                   help="text files (plain, .gz or .zst) or Parquet/Arrow files (.parquet, .arrow: a document "
                        "a row; pip install 'lmforge[datasets]')")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or earlier prepared data (replaced once the new data is complete)")
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", "bert", "lines", "jsonl", "parallel"),
        help="bert: sentence per line, blank line between documents (WikiText titles detected); "
        "lines: document per line; jsonl: JSON object per line; auto: guess per file; "
        "parallel: translation pairs, --input SRC TGT (aligned files) or one .tsv / .jsonl "
        "(fields source, target), the same for --valid",
    )
    p.add_argument("--text-column", "--text-field", dest="text_field", default="text",
                   help="JSONL field or Parquet/Arrow column holding the document text (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--valid-fraction", type=float, default=0.0, help="share of documents held out for valid")
    group.add_argument("--valid", nargs="+", default=[], metavar="FILE_OR_GLOB", help="held-out files")
    p.add_argument("--shard-tokens", type=int, default=50_000_000, help="tokens per shard (ends at a document)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/valid document split")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lmforge.data.prepare import PrepareConfig, prepare, summary_lines

    manifest = prepare(
        PrepareConfig(
            tokenizer=args.tokenizer,
            inputs=args.input,
            out=args.out,
            format=args.format,
            text_field=args.text_field,
            workers=args.workers,
            valid_fraction=args.valid_fraction,
            valid=args.valid,
            shard_tokens=args.shard_tokens,
            seed=args.seed,
            progress=not args.quiet,
        )
    )
    for line in summary_lines(manifest):
        print(line)
    print(f"wrote {args.out}/manifest.json")
    return 0
