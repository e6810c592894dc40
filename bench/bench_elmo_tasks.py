"""What pre-training the biLM buys (Peters et al. 2018 §3.3, Table 1's question at CPU size): CoNLL-2003
entity F1 and SST-2 accuracy of a task head on frozen ELMo features (the learned scalar mix of all
layers), from a trained ELMo vs the same ELMo randomly initialised, same head, data and budget.

Both sides run `lmforge finetune` as a user would (feature-based, the model's default) and are scored
on the dev split (CoNLL eng.testa, SST-2 dev.tsv) by the run's own selection on dev.

    python bench/bench_elmo_tasks.py --elmo runs/elmo/final                    # the table (an hour or more on 2 CPUs)
    python bench/bench_elmo_tasks.py --elmo runs/elmo/final --limit 500 --eval-limit 200 --epochs 1  # quick
Results go to --out (default bench/results/elmo_tasks[_limit<N>].json) and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from bench_pretrained_vs_random import random_twin  # the run's architecture, heads and tokenizer, fresh weights

from lmforge.finetune import FinetuneConfig, finetune

DATA = Path(os.environ.get("LMFORGE_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
TASKS = {"ner": ("conll2003", "entity F1 (eng.testa)"), "sst2": ("glue/SST-2", "accuracy (dev)")}


def run(task: str, model: Path, out: Path, args: argparse.Namespace) -> dict:
    data = DATA / TASKS[task][0]
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: shared data missing (set LMFORGE_DATA)")
    cfg = FinetuneConfig(task=task, model=str(model), data=str(data), out=str(out), epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, limit=args.limit, eval_limit=args.eval_limit,
                         seed=args.seed, device=args.device, task_rnn=args.task_rnn, progress=False, overwrite=True)
    start = time.perf_counter()
    summary = finetune(cfg)
    return {"score": summary["selected"][summary["main_metric"]], "metric": summary["main_metric"],
            "steps": summary["steps"], "seconds": time.perf_counter() - start,
            "train_examples": summary["train_examples"], "dev_examples": summary["dev_examples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elmo", required=True, type=Path, help="trained ELMo model directory (pretrain's final/)")
    parser.add_argument("--tasks", default="ner,sst2", help="comma list of ner, sst2")
    parser.add_argument("--limit", type=int, help="quick mode: first N training examples")
    parser.add_argument("--eval-limit", type=int, help="quick mode: first N dev examples")
    parser.add_argument("--epochs", type=float, help="default: the task type's recipe")
    parser.add_argument("--batch-size", type=int, help="default: the task type's recipe")
    parser.add_argument("--lr", type=float, help="default: the feature-based rate (lmforge.finetune_defaults)")
    parser.add_argument("--task-rnn", type=int, help="the heads' biLSTM layers (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise SystemExit(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        models = {"trained ELMo": args.elmo, "random ELMo": random_twin(args.elmo, work / "random", args.seed)}
        results = {task: {name: run(task, path, work / f"{task}-{i}", args) for i, (name, path) in enumerate(models.items())}
                   for task in tasks}
    record = {"elmo": str(args.elmo), "quick": args.limit is not None, "limit": args.limit,
              "eval_limit": args.eval_limit, "epochs": args.epochs, "torch": torch.__version__,
              "machine": platform.machine(), "threads": torch.get_num_threads(), "results": results}
    out = args.out or Path(__file__).parent / "results" / f"elmo_tasks{f'_limit{args.limit}' if args.limit else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"| task | metric | trained ELMo | random ELMo | train / dev examples |{' (quick mode)' if args.limit else ''}")
    print("|---|---|---|---|---|")
    for task, by_model in results.items():
        a, b = by_model["trained ELMo"], by_model["random ELMo"]
        print(f"| {task} | {TASKS[task][1]} | {a['score']:.1f} | {b['score']:.1f} | "
              f"{a['train_examples']} / {a['dev_examples']} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
