"""`lmforge compare RUN_DIR...`: one table and one picture for several runs on the same corpus.

The table has each run's recipe, steps, tokens, training time, throughput, final training loss and
last held-out metrics; the picture overlays their training (solid) and held-out (dashed) loss
curves against steps, tokens or time -- the way to compare objectives, sizes or tokenizers trained
on the same data and budget. Everything comes from the runs' `metrics.jsonl` and `config.yaml`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

X_AXES = {"step": "optimizer step", "tokens": "tokens seen", "time": "training time (min)"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="compare runs: one table, one plot of their loss curves",
                                   description=__doc__)
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="pre-training (or fine-tuning) run directories")
    parser.add_argument("--plot", default="compare.png", metavar="FILE.png",
                        help="where to write the overlaid curves (default: %(default)s)")
    parser.add_argument("--x", choices=tuple(X_AXES), default="tokens",
                        help="horizontal axis of the plot (default: %(default)s: fair across batch sizes)")
    parser.add_argument("--metric", default="loss",
                        help="curve to plot: loss (each run's whole objective) or a per-head one such as "
                             "mlm_loss, lm_loss, mlm_accuracy -- the one to use across objectives "
                             "(default: %(default)s)")
    parser.set_defaults(func=run)


def read_run(run_dir: Path) -> dict[str, Any]:
    """The records and recipe of one run directory; a one-line error if it holds no metrics."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no metrics.jsonl (not an lmforge run directory?)")
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # cut off by a kill
                break
            raise ValueError(f"{path}: line {number}: not valid JSON") from None
    train = [r for r in records if "loss" in r and r.get("kind", "train") == "train"]
    evals = [{k.removeprefix("eval_"): v for k, v in r.items() if k.startswith("eval_") or k == "step"}
             for r in records if any(k.startswith("eval_") for k in r)]
    evals += [{k: v for k, v in r.items() if k != "kind"} for r in records if r.get("kind") == "eval"]
    return {"dir": run_dir, "train": train, "evals": evals, "recipe": recipe_of(run_dir)}


def recipe_of(run_dir: Path) -> str:
    import yaml

    config_path, args_path = run_dir / "config.yaml", run_dir / "args.json"
    if config_path.is_file():
        config = yaml.safe_load(config_path.read_text()) or {}
        model, objective = config.get("model") or {}, config.get("objective") or {}
        start = f"init {Path(model['init_from']).name}" if model.get("init_from") else model.get("preset")
        return f"{objective.get('kind')} {start} seq {objective.get('max_seq_len')}"
    if args_path.is_file():
        args = json.loads(args_path.read_text())
        return f"finetune {args.get('task')} from {Path(str(args.get('model'))).name}"
    return "?"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(runs: list[dict[str, Any]]) -> str:
    """A Markdown table, one row per run."""
    metric_keys: list[str] = []
    for info in runs:
        last = info["evals"][-1] if info["evals"] else {}
        metric_keys += [k for k, v in last.items() if k not in ("step", "epoch") and k not in metric_keys
                        and isinstance(v, (int, float))]
    names = [str(info["dir"]) for info in runs]
    header = ["run", "recipe", "steps", "tokens", "time (min)", "tokens/s", "final loss",
              *[f"held-out {k}" for k in metric_keys]]
    rows = []
    for name, info in zip(names, runs):
        last = info["train"][-1] if info["train"] else {}
        seconds = last.get("elapsed_s")
        tokens = last.get("tokens")
        evals = info["evals"][-1] if info["evals"] else {}
        rows.append([name, info["recipe"], last.get("step"), tokens,
                     None if seconds is None else seconds / 60,
                     None if not (seconds and tokens) else tokens / seconds, last.get("loss"),
                     *[evals.get(k) for k in metric_keys]])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _x_of(info: dict[str, Any], axis: str) -> dict[int, float]:
    """step -> x for every step a training record has (held-out points take the nearest earlier)."""
    if axis == "step":
        return {r["step"]: float(r["step"]) for r in info["train"]}
    key = "tokens" if axis == "tokens" else "elapsed_s"
    scale = 1.0 if axis == "tokens" else 1 / 60
    return {r["step"]: r[key] * scale for r in info["train"] if key in r}


def plot(runs: list[dict[str, Any]], path: Path, axis: str, metric: str = "loss") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for index, info in enumerate(runs):
        color = f"C{index % 10}"
        xs = _x_of(info, axis)
        key = "loss" if metric == "loss" else f"train_{metric}"
        train = [(xs[r["step"]], r[key]) for r in info["train"] if r["step"] in xs and key in r]
        if train:
            ax.plot(*zip(*train), color=color, linewidth=1, label=f"{info['dir']} train")
        known = sorted(xs)
        held = []
        for record in info["evals"]:
            before = [s for s in known if s <= record.get("step", -1)]
            if metric in record and before:
                held.append((xs[before[-1]], record[metric]))
        if held:
            ax.plot(*zip(*held), "o--", color=color, label=f"{info['dir']} held-out")
    ax.set_xlabel(X_AXES[axis])
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run(args: argparse.Namespace) -> int:
    runs = [read_run(Path(r)) for r in args.runs]
    print(table(runs))
    out = plot(runs, Path(args.plot), args.x, args.metric)
    print(f"curves: {out}")
    return 0
