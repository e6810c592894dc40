"""`lmforge embed`: sentence embeddings or per-layer features of a text file, saved as .npy."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

POOLINGS = ("mean", "cls", "last")  # lmforge.features.POOLINGS (not imported here: --help stays fast)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("embed", help="one vector per input line (or per line and layer) to .npy")
    # argparse takes "-1" as a value but "-1,-2" as an unknown option; let comma lists of negatives through
    parser._negative_number_matcher = re.compile(r"^-\d+(,\s*-?\d+)*$|^-\d*\.\d+$")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="lmforge or HuggingFace model directory")
    parser.add_argument("--input", required=True, metavar="FILE", help="UTF-8 text, one text per line")
    parser.add_argument("--out", required=True, metavar="FILE.npy")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="mean: attention-mask weighted mean; cls: first token; last: last real token")
    parser.add_argument("--layers", default=None, metavar="I,J,...",
                        help="hidden states to keep, e.g. -1,-2 (0 = embeddings); output (N, layers, H)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per text (default: model's maximum)")
    parser.add_argument("--no-normalize", dest="normalize", action="store_false",
                        help="keep raw vectors instead of L2-normalising them")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.set_defaults(func=run)


def parse_layers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--layers {text!r}: expected comma-separated integers, e.g. -1,-2,-3,-4") from None
    if not layers:
        raise ValueError("--layers is empty")
    return layers


def _save_npy(array, out: Path) -> None:
    """Atomic (an interrupted run never leaves a truncated .npy behind), with the umask's permissions."""
    import numpy as np

    from lmforge.atomic import atomic_path

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def run(args: argparse.Namespace) -> int:
    from lmforge.convert import load_pretrained
    from lmforge.features import embed_texts, read_texts
    from lmforge.tokenizers import require_model_tokenizer

    layers = parse_layers(args.layers)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise ValueError(f"{out}: output must be a .npy file")
    texts = read_texts(args.input)  # before loading the model: a bad input fails fast
    model = load_pretrained(args.model).to(args.device)
    tokenizer = require_model_tokenizer(args.model, model.config.vocab_size)
    vectors = embed_texts(
        model, tokenizer, texts, pooling=args.pooling, layers=layers, batch_size=args.batch_size,
        max_length=args.max_length, normalize=args.normalize, progress=sys.stderr.isatty(),
    )
    _save_npy(vectors, out)
    print(f"embedded {len(texts)} texts -> {out} {vectors.shape} float32", file=sys.stderr)
    return 0
