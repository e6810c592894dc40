"""Inference vocabulary projection on CPU: F.linear against lmforge's two shapes of the same product.

    python bench/bench_projection.py [--shapes 8000x256,8000x512,50257x256] [--rows 1,4,16,64,256]

For each (V, H) table and row count prints milliseconds per call (best of 5 rounds of 10 calls, fp32,
no autograd) for `F.linear`, the transposed product W @ x^T and the 1,024-column blocks that
`lmforge.nn.projection.output_projection` chooses between (TRANSPOSED_MAX_ROWS), and which one it takes.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.nn import functional as F

from lmforge.nn import projection


def best_ms(fn, x: torch.Tensor) -> float:
    fn(x)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            fn(x)
        best = min(best, (time.perf_counter() - start) / 10)
    return best * 1e3


def forced(rows_limit: int):
    """output_projection with its row switch set so that it takes one path."""
    def run(x, weight, bias):
        saved, projection.TRANSPOSED_MAX_ROWS = projection.TRANSPOSED_MAX_ROWS, rows_limit
        try:
            return projection.output_projection(x, weight, bias)
        finally:
            projection.TRANSPOSED_MAX_ROWS = saved
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="8000x256,8000x512,50257x256", help="VxH tables")
    parser.add_argument("--rows", default="1,4,16,64,256")
    args = parser.parse_args()
    torch.manual_seed(0)
    transposed, blocks = forced(1 << 30), forced(0)
    print(f"{torch.get_num_threads()} threads; ms per call, best of 5 x 10")
    print("| V x H | rows | F.linear | transposed | blocks | lmforge takes |\n|---|---|---|---|---|---|")
    with torch.no_grad():
        for shape in args.shapes.split(","):
            vocab, hidden = (int(v) for v in shape.split("x"))
            weight, bias = torch.randn(vocab, hidden), torch.randn(vocab)
            for n in (int(r) for r in args.rows.split(",")):
                x = torch.randn(n, hidden)
                times = [best_ms(lambda x, f=f, w=weight, b=bias: f(x, w, b), x) for f in (F.linear, transposed, blocks)]
                taken = "transposed" if n <= projection.TRANSPOSED_MAX_ROWS else "blocks"
                print(f"| {vocab:,} x {hidden} | {n} | " + " | ".join(f"{t:.2f}" for t in times) + f" | {taken} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
