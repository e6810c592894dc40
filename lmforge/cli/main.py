"""`lmforge <command> ...`: dispatch to the subcommand modules.

Each module in COMMANDS exposes `register(subparsers)`, which adds its parser and sets
`func=run`. Errors a user can fix (bad paths, malformed files, bad configs) print one line
naming the problem and exit with status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lmforge import __version__

COMMANDS = (
    "convert",
    "embed",
    "tokenizer",
    "prepare",
    "pretrain",
    "finetune",
    "evaluate",
    "predict",
    "generate",
)


class UserError(Exception):
    """A problem with the user's input, reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"lmforge.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
