"""Markdown table of bench/results/*.json (written by bench_finetune.py) for the README."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MAIN = {"sst2": ["accuracy"], "mrpc": ["f1", "accuracy"], "stsb": ["pearson", "spearman"],
        "conll2003": ["f1"], "squad": ["exact_match", "f1"]}


def percent(task: str, scale: str | None = None) -> float:
    """Factor that shows a task's metric in percent: results written since every metric is in percent
    say `"metric_scale": "percent"`; older ones held GLUE scores as fractions (seqeval/SQuAD in percent)."""
    return 1.0 if scale == "percent" or task in ("conll2003", "squad") else 100.0


def fmt_metrics(task: str, metrics: dict, scale: str | None = None) -> str:
    return " / ".join(f"{k} {percent(task, scale) * metrics[k]:.1f}" for k in MAIN.get(task, list(metrics))
                      if k in metrics)


def dev_history(task: str, history: list[dict] | None, scale: str | None = None) -> str:
    """The first main metric at each dev evaluation (each epoch unless --eval-every; eng.testa for CoNLL)."""
    if not history:
        return "-"
    key = MAIN.get(task, [None])[0]
    return " / ".join(f"{percent(task, scale) * h[key]:.1f}" for h in history if key in h) or "-"


def table(paths: list[Path]) -> str:
    rows = ["| task | target | lmforge score | HF score | lmforge time | HF time | speedup | lmforge dev history "
            "| setting |",
            "|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        r = json.loads(path.read_text())
        ours, theirs, s = r["lmforge"], r.get("hf"), r["settings"]
        scale = r.get("metric_scale")
        setting = f"{s['epochs']:g} ep, bs {s['batch_size']}, lr {s['lr']:g}, {s['device']}"
        if s.get("select_best"):  # both sides scored dev every eval_every steps and kept their best
            every = f"every {s['eval_every']} steps" if s.get("eval_every") else "each epoch"
            setting += (f", dev scored {every}, best kept on both sides "
                        f"(steps {ours['selected_step']} / {theirs['selected_step'] if theirs else '-'}); "
                        f"final models {fmt_metrics(r['task'], ours['final_metrics'], scale)}"
                        + (f" / {fmt_metrics(r['task'], theirs['final_metrics'], scale)}" if theirs else ""))
        elif "selected_step" in ours:
            setting += f", best dev epoch kept (step {ours['selected_step']})"
        if s.get("limit"):
            setting += f", limit {s['limit']}"
        rows.append("| " + " | ".join([
            r["task"], r["target"], fmt_metrics(r["task"], ours["metrics"], scale),
            fmt_metrics(r["task"], theirs["metrics"], scale) if theirs else "-",
            f"{ours['wall_seconds']:.0f} s", f"{theirs['wall_seconds']:.0f} s" if theirs else "-",
            f"{r['speedup']:.2f}x" if "speedup" in r else "-", dev_history(r["task"], ours.get("dev_history"), scale),
            setting]) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    include_limited = "--all" in sys.argv
    paths = sorted(p for p in RESULTS.glob("*.json")
                   if (include_limited or "_limit" not in p.name) and not p.name.startswith("defaults_"))
    print(table(paths) if paths else "no results in bench/results (run bench/bench_finetune.py)")
