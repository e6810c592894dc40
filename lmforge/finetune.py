"""Fine-tuning loop shared by every task: a pre-trained backbone + a new task head, AdamW with
linear warmup/decay (BERT §4 / Appendix A.3: lr in {5e-5, 4e-5, 3e-5, 2e-5}, batch 32, 3 epochs,
10% warmup), dynamic padding over length-grouped batches, best-checkpoint selection on dev.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmforge import gpt_finetuning, text_to_text
from lmforge.config import is_lmforge_dir
from lmforge.finetune_data import TASK_FILE, check_out_dir, read_splits
from lmforge.finetune_defaults import recipe_for
from lmforge.models import TaskModel, load_model, save_model
from lmforge.models.task_model import load_state
from lmforge.nn.init import init_weights
from lmforge.tasks import Encoded, Task, TaskOptions, default_max_length, get_task
from lmforge.tasks.base import feature_length
from lmforge.tasks.text import load_task_tokenizer, pad_id
from lmforge.train.optim import build_optimizer, lr_factor, set_lr

HEAD = "task"  # the name of the task head in a fine-tuned model's config.json
METRICS_FILE = "metrics.jsonl"


@dataclass(kw_only=True)
class FinetuneConfig:
    """What `lmforge finetune` was asked for; None means the task type's recipe (finetune_defaults)."""

    task: str
    model: str
    data: str
    out: str
    lr: float | None = None
    batch_size: int | None = None
    epochs: float | None = None
    warmup_ratio: float | None = None
    max_length: int | None = None  # None -> the task's default (128; SQuAD 384)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 42
    eval_every: int | None = None  # steps between dev evaluations; 0 -> once per epoch; None -> recipe
    evals_per_epoch: int | None = None  # None -> the recipe's; used when eval_every is None
    select_best: bool = True  # keep the checkpoint with the best dev score, else the final one
    dev_fraction: float = 0.1  # held out of a single --data file as dev (0: no dev, final model kept)
    eval_batch_size: int = 128
    limit: int | None = None  # use only the first N training examples (quick checks)
    eval_limit: int | None = None
    device: str = "auto"
    bf16: bool | None = None  # None -> on CUDA only
    progress: bool = True
    overwrite: bool = False  # replace an earlier fine-tuning run in `out`
    options: TaskOptions = field(default_factory=TaskOptions)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_recipe(cfg: FinetuneConfig, task: Task) -> FinetuneConfig:
    """`cfg` with every value left at None taken from the recipe of the task's type."""
    recipe = recipe_for(task.task_type)
    return dataclasses.replace(
        cfg, lr=recipe.lr if cfg.lr is None else cfg.lr,
        batch_size=cfg.batch_size or recipe.batch_size, epochs=cfg.epochs or recipe.epochs,
        warmup_ratio=recipe.warmup_ratio if cfg.warmup_ratio is None else cfg.warmup_ratio,
        evals_per_epoch=cfg.evals_per_epoch or recipe.evals_per_epoch)


def eval_interval(cfg: FinetuneConfig, steps_per_epoch: int) -> int:
    """Steps between dev evaluations: --eval-every, or an epoch cut into evals_per_epoch parts."""
    if cfg.eval_every:
        return cfg.eval_every
    if cfg.eval_every == 0:
        return steps_per_epoch
    return max(1, math.ceil(steps_per_epoch / (cfg.evals_per_epoch or 1)))


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
                   device: torch.device, bf16: bool | None = None, progress: bool = False,
                   desc: str = "predict") -> list[np.ndarray]:
    """Per-feature logits in feature order; batches sorted by length so padding stays small.
    `progress`: a tqdm bar with an ETA on stderr, cleared when done."""
    was_training = model.training
    model.eval()
    features = encoded.features
    order = sorted(range(len(features)), key=lambda i: feature_length(features[i]))
    out: list[np.ndarray | None] = [None] * len(features)
    starts = range(0, len(order), batch_size)
    with torch.inference_mode(), _autocast(device, bf16):
        for at in tqdm(starts, desc=desc, unit="batch", leave=False, disable=not progress):
            chunk = order[at:at + batch_size]
            batch = task.collate([features[i] for i in chunk], pad)
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            logits = model(**_to_device(batch, device), heads=(HEAD,)).heads[HEAD].logits
            for row, i in enumerate(chunk):
                out[i] = task.trim_logits(features[i], logits[row])
    model.train(was_training)
    return out  # type: ignore[return-value]


def evaluate_examples(model: TaskModel, task: Task, examples: list[Any], tokenizer: Any, max_length: int,
                      batch_size: int, device: torch.device, bf16: bool | None = None, progress: bool = False
                      ) -> tuple[list[Any], dict[str, float]]:
    """Predictions and metrics (percent) for labelled examples."""
    if isinstance(task, text_to_text.TextToTextTask):  # generates, then scores the text
        return task.evaluate(model, examples, tokenizer, max_length, batch_size, device, _autocast(device, bf16))
    labels = label_names_of(model)
    encoded = task.encode(examples, tokenizer, max_length, labels, train=False)
    logits = predict_logits(model, task, encoded, pad_id(tokenizer), batch_size, device, bf16, progress, "dev")
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
    seq2seq = text_to_text.is_encoder_decoder(cfg.model)  # T5: every task as text to text
    task = text_to_text.get_text_task(cfg.task, cfg.options) if seq2seq else get_task(cfg.task, cfg.options)
    cfg = apply_recipe(cfg, task)
    max_length = cfg.max_length or default_max_length(cfg.task)
    out = Path(cfg.out)
    check_out_dir(out, cfg.overwrite)

    splits = read_splits(task, cfg)
    train_examples, dev_examples = splits.train, splits.dev
    labels = task.label_names(train_examples)
    model_dir = Path(cfg.model)
    tokenizer = load_task_tokenizer(model_dir)
    model = (text_to_text.load_model(model_dir, HEAD) if seq2seq
             else load_backbone_with_head(model_dir, task.head_spec(labels))).to(device)
    model, tokenizer, task = gpt_finetuning.adapt(model, tokenizer, task, HEAD)  # decoders: GPT-1 §3.3
    if max_length > model.config.max_position_embeddings - model.config.position_offset:
        raise ValueError(f"--max-length {max_length} exceeds the model's positions")
    encoded = task.encode(train_examples, tokenizer, max_length, labels, train=True)
    features = encoded.features
    if not features:
        raise ValueError(f"{cfg.data}: no training features")
    pad = pad_id(tokenizer)
    lengths = [feature_length(f) for f in features]

    rng = random.Random(cfg.seed)
    steps_per_epoch = math.ceil(len(features) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    eval_every = eval_interval(cfg, steps_per_epoch)
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay)

    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps({**cfg.to_dict(), "task_type": task.task_type,
                                               "eval_every_steps": eval_every}, indent=2) + "\n")
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
            batch = gpt_finetuning.with_lm_labels(model, _to_device(task.collate([features[i] for i in indices], pad),
                                                                   device))
            set_lr(optimizer, cfg.lr, lr_factor(step / total_steps, cfg.warmup_ratio, "linear"))
            with _autocast(device, cfg.bf16):
                loss = model(**batch).loss  # the task head (+ GPT-1's auxiliary LM head)
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
                                              cfg.eval_batch_size, device, cfg.bf16, progress=cfg.progress)
                log({"kind": "eval", "step": step, "epoch": step / steps_per_epoch, **scores})
                bar.write(f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), file=sys.stderr)
                score = scores[task.main_metric]
                if best_score is None or score > best_score:
                    best_score, best_step, best_metrics = score, step, scores
                    if cfg.select_best:
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    bar.close()
    train_seconds = time.perf_counter() - start

    final_metrics = history[-1] if history and history[-1]["kind"] == "eval" else None
    final = {"step": step, **({k: v for k, v in final_metrics.items() if k not in ("kind", "epoch")}
                              if final_metrics else {})}
    selected = best_state is not None
    if selected:
        model.load_state_dict(best_state)
    chosen = {"step": best_step, **(best_metrics or {})} if selected else final
    gpt_finetuning.drop_aux_head(model)
    save_model(model.to("cpu"), out, tokenizer)
    (out / TASK_FILE).write_text(json.dumps({"task": cfg.task, "task_name": task.name, "max_length": max_length,
                                             "options": task.options.to_dict(), "holdout": splits.holdout},
                                            indent=2) + "\n")
    plot_history(history, task.main_metric, out / "training.png")
    evaluations = sum(r["kind"] == "eval" for r in history)
    summary = {"task": task.name, "task_type": task.task_type,
               "hyperparameters": {"lr": cfg.lr, "batch_size": cfg.batch_size, "epochs": cfg.epochs,
                                   "warmup_ratio": cfg.warmup_ratio, "eval_every_steps": eval_every},
               "train_examples": len(train_examples), "train_features": len(features),
               "steps": step, "train_seconds": train_seconds, "main_metric": task.main_metric,
               "metric_scale": "percent", "selected": chosen, "final": final,
               "dev_examples": len(dev_examples) if dev_examples is not None else 0, "dev_source": splits.dev_source,
               "selection": selection_note(selected, evaluations, task.main_metric, best_step, step)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def selection_note(selected: bool, evaluations: int, metric: str, best_step: int | None, step: int) -> str:
    """What the reported dev score means: picked on dev (optimistic), or the final model's."""
    if selected:
        return (f"the model of step {best_step} was kept: the best {metric} of {evaluations} dev evaluations; "
                "dev was used for selection, so its score is optimistic (score a separate split for a "
                "clean estimate)")
    if evaluations:
        return f"the final model (step {step}) was kept; dev was not used for selection"
    return f"the final model (step {step}) was kept; no dev examples were scored"
