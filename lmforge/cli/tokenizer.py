"""`lmforge tokenizer train|encode`: train a tokenizer from text files; inspect how text is split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmforge.choices import TOKENIZER_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tokenizer", help="train or inspect a tokenizer")
    sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

    train = sub.add_parser("train", help="train WordPiece / byte-level BPE / Unigram / word vocabularies on text files")
    train.add_argument("--kind", choices=TOKENIZER_KINDS, required=True,
                       help="word: whole whitespace-separated words of an already tokenised corpus (ELMo), "
                            "the most frequent up to --vocab-size, the rest [UNK]")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--corpus", nargs="+", required=True, metavar="FILE",
                       help="UTF-8 text files (plain, .gz or .zst), one sentence or document per line, or "
                            "Parquet/Arrow files (.parquet, .arrow) with a text column")
    train.add_argument("--text-column", default="text",
                       help="Parquet/Arrow column holding the text (default: %(default)s)")
    train.add_argument("--out", required=True, metavar="DIR")
    # no `choices`: the families live in lmforge.tokenizers.families (which imports `tokenizers`); an unknown
    # name is refused before any reading, with the list of known ones
    train.add_argument("--family", default=None,
                       help="special tokens and segment template: bert, roberta, gpt2, albert, ... "
                            "(default: bert/gpt2/albert by kind)")
    train.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                       help="default: the family's (BERT/ALBERT uncased, GPT-2/RoBERTa cased)")
    train.add_argument("--strip-accents", action="store_true",
                       help="drop accents (Hangul syllables are kept intact)")
    train.add_argument("--min-frequency", type=int, default=2)
    train.add_argument("--limit-alphabet", type=int, default=None,
                       help="keep at most this many initial characters (default: all)")
    train.add_argument("--max-length", type=int, default=None, help="model_max_length (default: family's)")
    train.set_defaults(func=run)

    encode = sub.add_parser("encode", help="show tokens and ids of a text")
    encode.add_argument("--tokenizer", required=True, metavar="DIR")
    encode.add_argument("text", nargs="+")
    encode.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here: `tokenizers` (and what lmforge.tokenizers loads with it) is not needed for --help
    from lmforge.data.reader import ReadStats
    from lmforge.tokenizers import load_tokenizer, special_tokens, train_tokenizer, write_hf_tokenizer_files
    from lmforge.tokenizers.families import default_family

    if args.tokenizer_command == "encode":
        tokenizer = load_tokenizer(args.tokenizer)
        encoding = tokenizer.encode(" ".join(args.text))
        print(" ".join(encoding.tokens))
        print(" ".join(map(str, encoding.ids)))
        return 0
    if args.vocab_size < 1:
        raise ValueError(f"--vocab-size must be positive, got {args.vocab_size}")
    family = args.family or default_family(args.kind)
    stats = ReadStats()
    tokenizer = train_tokenizer(
        args.kind, args.corpus, args.vocab_size, lowercase=args.lowercase, strip_accents=args.strip_accents,
        family=family, min_frequency=args.min_frequency, limit_alphabet=args.limit_alphabet,
        model_max_length=args.max_length, show_progress=sys.stderr.isatty(), stats=stats,
        text_column=args.text_column,
    )
    out = write_hf_tokenizer_files(tokenizer, Path(args.out), family)
    print(f"{args.kind} tokenizer ({family}), vocab {tokenizer.get_vocab_size()}, "
          f"specials {special_tokens(tokenizer)} -> {out}", file=sys.stderr)
    print(f"read {stats.lines} lines; {stats.invalid_utf8_lines} lines with invalid UTF-8 (replaced with U+FFFD)"
          + (f"; skipped {stats.empty_documents} null or blank Parquet/Arrow rows" if stats.empty_documents else ""),
          file=sys.stderr)
    for note in stats.examples:
        print(f"  {note}", file=sys.stderr)
    return 0
