"""Throughput of `lmforge prepare` against bare `tokenizers` encode_batch on the same file.

Both run in this process on the same machine with the same tokenizer. The peer reads every line
into memory and calls encode_batch on 1 MB batches (add_special_tokens=False) -- what prepare
does minus reading/splitting, word-start bits and writing shards. Target: ratio >= 0.8.

    python bench/bench_prepare.py --tokenizer DIR [--input wiki.train.tokens] [--workers 2] [--max-mb N]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer

from lmforge.data.encode import tokenizer_file
from lmforge.data.prepare import PrepareConfig, prepare

DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "wiki.train.tokens"


def bare_encode(tok_dir: str, path: Path) -> tuple[float, int]:
    tok = Tokenizer.from_file(str(tokenizer_file(tok_dir)))
    tok.no_padding()
    tok.no_truncation()
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    began = time.perf_counter()
    tokens = 0
    batch, size = [], 0
    for line in itertools.chain(lines, [None]):
        if line is not None:
            batch.append(line)
            size += len(line)
        if batch and (size >= 1 << 20 or line is None):
            tokens += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
            batch, size = [], 0
    return time.perf_counter() - began, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--input", default=str(DEFAULT_INPUT))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-mb", type=float, default=0, help="use only the first N MB (quick check)")
    args = parser.parse_args()
    src = Path(args.input)
    with tempfile.TemporaryDirectory() as tmp:
        if args.max_mb:
            cut = Path(tmp) / src.name
            with open(src, "rb") as fh:
                cut.write_bytes(fh.read(int(args.max_mb * 1e6)).rsplit(b"\n", 1)[0] + b"\n")
            src = cut
        mb = src.stat().st_size / 1e6
        peer_s, peer_tokens = bare_encode(args.tokenizer, src)
        began = time.perf_counter()
        manifest = prepare(
            PrepareConfig(tokenizer=args.tokenizer, inputs=[str(src)], out=f"{tmp}/out", workers=args.workers, progress=False)
        )
        ours_s = time.perf_counter() - began
    ours_tokens = manifest["splits"]["train"]["tokens"]
    print(f"input: {src.name}, {mb:.2f} MB; workers={args.workers}")
    print(f"tokenizers encode_batch: {mb / peer_s:8.2f} MB/s  ({peer_tokens} tokens, {peer_s:.2f}s)")
    print(f"lmforge prepare:         {mb / ours_s:8.2f} MB/s  ({ours_tokens} tokens, {ours_s:.2f}s)")
    print(f"ratio (lmforge / tokenizers): {peer_s / ours_s:.2f}x  (target >= 0.8x)")


if __name__ == "__main__":
    main()
