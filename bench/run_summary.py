"""Summarise a pre-training run directory (metrics.jsonl) for the README: loss at the start and the
end, the held-out metrics at the first and last evaluation, steps, tokens and wall time.

    python bench/run_summary.py runs/quickstart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(run_dir: Path) -> str:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if any(k.startswith("eval_") for k in r)]
    if not train:
        return f"{run_dir}: no training records"
    first, last = train[0], train[-1]
    lines = [
        f"steps {last['step']}, tokens {last.get('tokens', 0):,}, training time {last.get('elapsed_s', 0) / 60:.1f} min",
        f"train loss {first['loss']:.3f} (step {first['step']}) -> {last['loss']:.3f} (step {last['step']})",
    ]
    if evals:
        keys = [k for k in evals[-1] if k.startswith("eval_")]
        for r in (evals[0], evals[-1]):
            lines.append(f"step {r['step']}: " + ", ".join(f"{k[5:]} {r[k]:.4g}" for k in keys if k in r))
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["runs/quickstart"]:
        print(summarize(Path(arg)))
