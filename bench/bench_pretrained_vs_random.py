"""What pre-training bought: fine-tune a pre-trained run and its random-init twin (same architecture,
tokenizer and heads, weights freshly initialised) on a task with the same flags, one after the other,
and report both dev scores. The question the XLNet and T5 issues ask of a 30-minute CPU pre-training run.

    python bench/bench_pretrained_vs_random.py --model runs/xlnet/final --task sst2 --limit 8000
    python bench/bench_pretrained_vs_random.py --model runs/t5/final --task sst2 --limit 8000 --seeds 0,1

Both sides run `lmforge.finetune.finetune` as the CLI does, with the task type's defaults unless --epochs,
--lr or --batch-size are given; the score is the run's own selected dev score (dev is used for selection,
on both sides alike). Several --seeds give a mean and the spread. Results go to --out (default
bench/results/pretrained_vs_random_<name>_<task>.json) and print as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lmforge.finetune import FinetuneConfig, finetune
from lmforge.models import TaskModel, load_model, save_model
from lmforge.tasks.text import load_task_tokenizer

DATA = Path(os.environ.get("LMFORGE_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
TASK_DATA = {"sst2": "glue/SST-2", "mrpc": "glue/MRPC", "stsb": "glue/STS-B", "conll2003": "conll2003"}


def random_twin(trained: Path, out: Path, seed: int) -> Path:
    """The trained run's config, heads and tokenizer with weights drawn by the model's own init."""
    model = load_model(trained)
    torch.manual_seed(seed)
    twin = TaskModel(model.config, model.head_specs())
    return save_model(twin, out, load_task_tokenizer(trained))


def fine_tune(model: Path, out: Path, seed: int, args: argparse.Namespace) -> dict:
    data = DATA / TASK_DATA[args.task]
    if not data.exists():
        raise SystemExit(f"{data}: shared data missing (set LMFORGE_DATA)")
    cfg = FinetuneConfig(task=args.task, model=str(model), data=str(data), out=str(out), epochs=args.epochs,
                         batch_size=args.batch_size, lr=args.lr, dropout=args.dropout, limit=args.limit, seed=seed,
                         device=args.device, bf16=args.bf16, progress=False, overwrite=True)
    start = time.perf_counter()
    summary = finetune(cfg)
    metric = summary["main_metric"]
    return {"seed": seed, "score": summary["selected"][metric], "final": summary["final"][metric],
            "metric": metric, "steps": summary["steps"], "seconds": round(time.perf_counter() - start, 1),
            "train_examples": summary["train_examples"], "dev_examples": summary["dev_examples"],
            "hyperparameters": summary["hyperparameters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="pre-trained model directory (pretrain's final/)")
    parser.add_argument("--task", default="sst2", choices=sorted(TASK_DATA))
    parser.add_argument("--limit", type=int, help="first N training examples (both sides alike)")
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--dropout", type=float, help="finetune --dropout: every dropout rate of both models (T5 v1.1: 0.1)")
    parser.add_argument("--seeds", default="0", help="comma list of fine-tuning seeds (also the twin's init seed)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    name = args.model.resolve().parent.name if args.model.name == "final" else args.model.name
    started = time.time()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        runs: dict[str, list[dict]] = {"pre-trained": [], "random init": []}
        for seed in seeds:
            twin = random_twin(args.model, work / f"random-{seed}", seed)
            for side, path in (("pre-trained", args.model), ("random init", twin)):
                runs[side].append(fine_tune(path, work / f"{side.replace(' ', '-')}-{seed}", seed, args))
                print(f"{side} seed {seed}: {runs[side][-1]['metric']} {runs[side][-1]['score']:.2f}", flush=True)
    summary = {side: {"mean": statistics.fmean(r["score"] for r in rs),
                      "stdev": statistics.stdev(r["score"] for r in rs) if len(rs) > 1 else 0.0,
                      "scores": [round(r["score"], 2) for r in rs]} for side, rs in runs.items()}
    record = {"model": str(args.model), "task": args.task, "limit": args.limit, "seeds": seeds, "lr": args.lr,
              "dropout": args.dropout,
              "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
              "wall_seconds": round(time.time() - started), "summary": summary, "runs": runs}
    out = args.out or Path(__file__).parent / "results" / f"pretrained_vs_random_{name}_{args.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    metric = runs["pre-trained"][0]["metric"]
    first = runs["pre-trained"][0]
    print(f"| task | {metric}: pre-trained | random init | seeds | train / dev examples | steps |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.task} | {summary['pre-trained']['mean']:.2f} ± {summary['pre-trained']['stdev']:.2f} | "
          f"{summary['random init']['mean']:.2f} ± {summary['random init']['stdev']:.2f} | {len(seeds)} | "
          f"{first['train_examples']} / {first['dev_examples']} | {first['steps']} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
