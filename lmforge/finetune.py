"""Fine-tuning loop shared by every task: a pre-trained backbone + a new task head, AdamW with
linear warmup/decay (BERT §4 / Appendix A.3: lr in {5e-5, 4e-5, 3e-5, 2e-5}, batch 32, 3 epochs,
10% warmup), dynamic padding over length-grouped batches, best-checkpoint selection on dev.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmforge.config import is_lmforge_dir
from lmforge.models import TaskModel, load_model, save_model
from lmforge.models.task_model import load_state
from lmforge.nn.init import init_weights
from lmforge.tasks import Encoded, Task, TaskOptions, default_max_length, get_task
from lmforge.tasks.base import feature_length
from lmforge.tasks.text import load_task_tokenizer, pad_id
from lmforge.train.optim import build_optimizer, lr_factor, set_lr

HEAD = "task"  # the name of the task head in a fine-tuned model's config.json
TASK_FILE = "task.json"
METRICS_FILE = "metrics.jsonl"


@dataclass(kw_only=True)
class FinetuneConfig:
    task: str
    model: str
    data: str
    out: str
    lr: float = 3e-5
    batch_size: int = 32
    epochs: float = 3.0
    warmup_ratio: float = 0.1
    max_length: int | None = None  # None -> the task's default (128; SQuAD 384)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_every: int = 0  # steps between dev evaluations; 0 -> once per epoch
    select_best: bool = True  # keep the checkpoint with the best dev score, else the final one
    eval_batch_size: int = 128
    limit: int | None = None  # use only the first N training examples (quick checks)
    eval_limit: int | None = None
    device: str = "auto"
    bf16: bool | None = None  # None -> on CUDA only
    progress: bool = True
    options: TaskOptions = field(default_factory=TaskOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_backbone_with_head(path: str | Path, head_spec: dict[str, Any]) -> TaskModel:
    """A pre-trained model (lmforge dir, or any format lmforge.convert reads) with a fresh task head."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model directory")
    if is_lmforge_dir(path):
        return load_model(path, heads={HEAD: head_spec})
    try:
        from lmforge.convert import load_pretrained
    except ImportError:
        raise ValueError(f"{path}: not an lmforge model directory, and lmforge.convert is not available "
                         "to read other formats") from None
    source = load_pretrained(path)
    model = TaskModel(source.config, {HEAD: head_spec}, init=False)  # the backbone is loaded below
    init_weights(model.heads[HEAD], source.config)
    state = {k: v for k, v in source.state_dict().items() if k.startswith("backbone.")}
    load_state(model, state, str(path), allow_missing_heads=True)
    return model


def load_finetuned(run_dir: str | Path) -> tuple[TaskModel, dict[str, Any]]:
    """A fine-tuned model and its task.json (task name and reading options)."""
    run_dir = Path(run_dir)
    task_path = run_dir / TASK_FILE
    if not task_path.is_file():
        raise FileNotFoundError(f"{task_path}: not a fine-tuning run directory (no {TASK_FILE})")
    model = load_model(run_dir)
    if HEAD not in model.heads:
        raise ValueError(f"{run_dir}: the model has no {HEAD!r} head (heads: {list(model.heads)})")
    return model, json.loads(task_path.read_text())


def label_names_of(model: TaskModel) -> list[str] | None:
    return model.heads[HEAD].spec().get("label_names")


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random,
                           group: int = 50) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of `group` batches, cut into batches, shuffle the batches:
    random training order with little padding per batch."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * group
    batches = []
    for at in range(0, len(order), chunk):
        block = sorted(order[at:at + chunk], key=lambda i: lengths[i], reverse=True)
        batches.extend(block[i:i + batch_size] for i in range(0, len(block), batch_size))
    rng.shuffle(batches)
    return batches


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device, bf16: bool | None):
    """The pre-training trainer's precision rule: None is "auto" (bf16 on a GPU that has it, fp32 on
    CPU), and True on a device without native bf16 is an error rather than a silent fp32 run."""
    from lmforge.train.trainer import autocast

    return autocast(device, "auto" if bf16 is None else "bf16" if bf16 else "fp32")


def predict_logits(model: TaskModel, task: Task, encoded: Encoded, pad: int, batch_size: int,
                   device: torch.device, bf16: bool | None = None) -> list[np.ndarray]:
    """Per-feature logits in feature order; batches sorted by length so padding stays small."""
    was_training = model.training
    model.eval()
    features = encoded.features
    order = sorted(range(len(features)), key=lambda i: feature_length(features[i]))
    out: list[np.ndarray | None] = [None] * len(features)
    with torch.inference_mode(), _autocast(device, bf16):
        for at in range(0, len(order), batch_size):
            chunk = order[at:at + batch_size]
            batch = task.collate([features[i] for i in chunk], pad)
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            logits = model(**_to_device(batch, device), heads=(HEAD,)).heads[HEAD].logits
            for row, i in enumerate(chunk):
                out[i] = task.trim_logits(features[i], logits[row])
    model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate_examples(model: TaskModel, task: Task, examples: list[Any], tokenizer: Any, max_length: int,
                      batch_size: int, device: torch.device, bf16: bool | None = None
                      ) -> tuple[list[Any], dict[str, float]]:
    """Predictions and metrics for labelled examples."""
    labels = label_names_of(model)
    encoded = task.encode(examples, tokenizer, max_length, labels, train=False)
    logits = predict_logits(model, task, encoded, pad_id(tokenizer), batch_size, device, bf16)
    predictions = task.decode(examples, encoded, logits, labels)
    return predictions, task.metrics(examples, predictions)


def plot_history(history: list[dict[str, Any]], main_metric: str, path: Path) -> None:
    """Training loss per step and the dev metric per evaluation, one PNG (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in history if r["kind"] == "train"]
    dev = [r for r in history if r["kind"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if dev:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in dev], [r[main_metric] for r in dev], "o-", color="tab:red",
                 label=f"dev {main_metric}")
        ax2.set_ylabel(f"dev {main_metric}")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Train, evaluate on dev as configured, and write the run directory. Returns a summary."""
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    task = get_task(cfg.task, cfg.options)
    max_length = cfg.max_length or default_max_length(cfg.task)
    data = Path(cfg.data)
    out = Path(cfg.out)

    train_examples = task.read(data, "train")[: cfg.limit]
    dev_examples = None
    try:
        dev_examples = task.read(data, "dev")[: cfg.eval_limit]
    except FileNotFoundError:
        if data.is_dir() or cfg.options.dev_file or cfg.options.eval_articles:
            raise
    labels = task.label_names(train_examples)
    model_dir = Path(cfg.model)
    tokenizer = load_task_tokenizer(model_dir)
    model = load_backbone_with_head(model_dir, task.head_spec(labels)).to(device)
    if max_length > model.config.max_position_embeddings - model.config.position_offset:
        raise ValueError(f"--max-length {max_length} exceeds the model's positions")
    encoded = task.encode(train_examples, tokenizer, max_length, labels, train=True)
    features = encoded.features
    if not features:
        raise ValueError(f"{data}: no training features")
    pad = pad_id(tokenizer)
    lengths = [feature_length(f) for f in features]

    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(features) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    eval_every = cfg.eval_every or steps_per_epoch
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)

    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    metrics_path = out / METRICS_FILE
    metrics_path.write_text("")
    history: list[dict[str, Any]] = []

    def log(record: dict[str, Any]) -> None:
        history.append(record)
        with metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    best_score, best_state, best_step, best_metrics = None, None, None, None
    step, start = 0, time.perf_counter()
    model.train()
    bar = tqdm(total=total_steps, desc=f"finetune {task.name}", disable=not cfg.progress, unit="step")
    while step < total_steps:
        for indices in length_grouped_batches(lengths, cfg.batch_size, rng):
            if step >= total_steps:
                break
            batch = _to_device(task.collate([features[i] for i in indices], pad), device)
            set_lr(optimizer, cfg.lr, lr_factor(step / total_steps, cfg.warmup_ratio, "linear"))
            with _autocast(device, cfg.bf16):
                loss = model(**batch, heads=(HEAD,)).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            log({"kind": "train", "step": step, "epoch": step / steps_per_epoch, "loss": value,
                 "lr": optimizer.param_groups[0]["lr"]})
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if dev_examples is not None and (step % eval_every == 0 or step == total_steps):
                _, scores = evaluate_examples(model, task, dev_examples, tokenizer, max_length,
                                              cfg.eval_batch_size, device, cfg.bf16)
                log({"kind": "eval", "step": step, "epoch": step / steps_per_epoch, **scores})
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                score = scores[task.main_metric]
                if best_score is None or score > best_score:
                    best_score, best_step, best_metrics = score, step, scores
                    if cfg.select_best:
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    bar.close()
    train_seconds = time.perf_counter() - start

    final_metrics = history[-1] if history and history[-1]["kind"] == "eval" else None
    if cfg.select_best and best_state is not None:
        model.load_state_dict(best_state)
        chosen = {"step": best_step, **(best_metrics or {})}
    else:
        chosen = {"step": step, **({k: v for k, v in final_metrics.items() if k not in ("kind", "epoch")}
                                   if final_metrics else {})}
    save_model(model.to("cpu"), out, tokenizer)
    (out / TASK_FILE).write_text(json.dumps({"task": cfg.task, "max_length": max_length,
                                             "options": task.options.to_dict()}, indent=2) + "\n")
    plot_history(history, task.main_metric, out / "training.png")
    summary = {"task": task.name, "train_examples": len(train_examples), "train_features": len(features),
               "steps": step, "train_seconds": train_seconds, "main_metric": task.main_metric,
               "selected": chosen, "dev_examples": len(dev_examples) if dev_examples is not None else 0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
