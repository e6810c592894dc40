"""`lmforge <command> ...`: dispatch to the subcommand modules.

Each module in COMMANDS exposes `register(subparsers)`, which adds its parser and sets
`func=run`. Only the module of the command being run is imported (the others get a one-line
placeholder for `lmforge --help`), and the modules import torch inside `run`, so `--help` and
`--version` answer at once. Errors a user can fix (bad paths, malformed files, bad configs) print
one line naming the problem and exit with status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lmforge import __version__

# command -> the line `lmforge --help` shows for it
COMMANDS = {
    "tokenizer": "train or inspect a tokenizer",
    "prepare": "tokenize raw text into memory-mapped shards",
    "pretrain": "pre-train a model (MLM+NSP, RoBERTa MLM, ALBERT SOP, ELECTRA, GPT CLM)",
    "finetune": "fine-tune a pre-trained model on a task",
    "evaluate": "evaluate a fine-tuned model on a labelled split",
    "predict": "predict with a fine-tuned model, one JSON line per input",
    "convert": "convert a HuggingFace checkpoint to an lmforge model directory, or back",
    "embed": "one vector per input line (or per line and layer) to .npy",
    "compare": "compare runs: one table, one plot of their loss curves",
    "generate": "continue prompts with a GPT-style or encoder-decoder model",
    "average": "average the weights of a run's last checkpoints (Vaswani et al. §6.1)",
}


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (it may be replaced meanwhile)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the property decides
        pass


def configure_logging(verbose: int, quiet: bool) -> None:
    """lmforge's loggers: warnings by default, -v info, -vv debug, -q errors only."""
    logger = logging.getLogger("lmforge")
    logger.setLevel(logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)])
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def _chosen_command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (top-level options take no values)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the full sub-parser of the command in `argv` (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="lmforge", description="Train Transformer language models end to end: tokenizer -> prepare -> "
                                    "pretrain -> finetune / evaluate / predict -> convert to HuggingFace.")
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="count", default=0,
                       help="more log messages (-v: info, -vv: debug); goes before the command")
    level.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen_command(argv) if argv is not None else None
    for name, summary in COMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(f"lmforge.cli.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except (UserError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"lmforge {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmforge {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
