"""Fine-tuning loop shared by every task: a pre-trained backbone + a new task head, AdamW with
linear warmup/decay (BERT §4 / Appendix A.3: lr in {5e-5, 4e-5, 3e-5, 2e-5}, batch 32, 3 epochs,
10% warmup), dynamic padding over length-grouped batches, best-checkpoint selection on dev.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lmforge import finetune_distill, finetune_inputs, gpt_finetuning, text_to_text
from lmforge.config import is_lmforge_dir
from lmforge.finetune_data import TASK_FILE, TaskBatches, check_out_dir, read_splits
from lmforge.finetune_defaults import FEATURE_BASED_LR, recipe_for
from lmforge.finetune_distill import keep_layers, with_teacher
from lmforge.finetune_selection import Best, selection_note
from lmforge.models import TaskModel, load_model, save_model
from lmforge.models.task_model import load_state, with_dropout
from lmforge.nn.init import init_weights
from lmforge.tasks import Encoded, Task, TaskOptions, default_max_length, get_task
from lmforge.tasks.base import feature_length
from lmforge.tasks.text import load_task_tokenizer, pad_id
from lmforge.train import distributed, loop
from lmforge.train.distributed import DistInfo
from lmforge.train.logger import RunLogger, read_metrics
from lmforge.train.loop import StepCallback, TrainState
from lmforge.train.metrics import output_heads
from lmforge.train.optim import build_optimizer
from lmforge.train.precision import autocast, resolve_precision

HEAD = "task"  # the name of the task head in a fine-tuned model's config.json
CHECKPOINTS = "checkpoints"  # under --out while the run is going (--resume); removed when it finishes
DEV_KEY = "dev"  # the dev scores inside the loop's record of a step


@dataclass(kw_only=True)
class FinetuneConfig:
    """What `lmforge finetune` was asked for; None means the task type's recipe (finetune_defaults)."""

    task: str
    model: str
    data: str
    out: str
    lr: float | None = None
    batch_size: int | None = None  # the global batch: micro-batches of batch_size / (grad_accum x ranks)
    grad_accum: int = 1
    epochs: float | None = None
    warmup_ratio: float | None = None
    max_length: int | None = None  # None -> the task's default (128; SQuAD 384)
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    dropout: float | None = None  # every dropout rate of the model set to this (T5 v1.1: 0.1); None: the model's
    seed: int = 42
    eval_every: int | None = None  # steps between dev evaluations; 0 -> once per epoch; None -> recipe
    evals_per_epoch: int | None = None  # None -> the recipe's; used when eval_every is None
    select_best: bool = True  # keep the checkpoint with the best dev score, else the final one
    patience: int = 0  # stop after this many dev evaluations without a new best (0: never stop early)
    dev_fraction: float = 0.1  # held out of a single --data file as dev (0: no dev, final model kept)
    eval_batch_size: int = 128
    limit: int | None = None  # use only the first N training examples (quick checks)
    eval_limit: int | None = None
    device: str = "auto"
    bf16: bool | None = None  # None -> on CUDA only
    progress: bool = True
    update_backbone: bool | None = None  # None: the model's choice (ELMo frozen, Peters et al. §3.3; others trained)
    task_rnn: int | None = None  # biLSTM layers of the head over the features (ELMo §3.3); None: the model's default
    overwrite: bool = False  # replace an earlier fine-tuning run in `out`
    resume: bool = False  # continue the interrupted run in `out` from its last checkpoint
    student_layers: int | None = None  # keep K of --model's N layers, one in N/K (DistilBERT §3); None: all
    teacher: str | None = None  # a fine-tuning run of the task whose soft labels the student learns too
    student_init: str | None = None  # "teacher" or "model" (finetune_distill.py); None: the teacher's if any
    # task distillation (task_distill.py): T, α_ce, α_task, α_layers; None: TaskDistillSettings' measured defaults
    distill_temperature: float | None = None
    distill_alpha_ce: float | None = None
    distill_alpha_task: float | None = None
    distill_alpha_layers: float | None = None
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


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device, bf16: bool | None):
    """The pre-training trainer's precision rule: None is "auto" (bf16 on a GPU that has it, fp32 on
    CPU), and True on a device without native bf16 is an error rather than a silent fp32 run."""
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
            keep = ("input_ids", "attention_mask", "token_type_ids", *model.backbone.input_names)
            batch = {k: v for k, v in batch.items() if k in keep}
            logits = model(**_to_device(batch, device), heads=(HEAD,)).heads[HEAD].logits
            for row, i in enumerate(chunk):
                out[i] = task.trim_logits(features[i], logits[row])
    model.train(was_training)
    return out  # type: ignore[return-value]


def predict_examples(model: TaskModel, task: Task, examples: list[Any], tokenizer: Any, max_length: int,
                     batch_size: int, device: torch.device, bf16: bool | None = None, progress: bool = False,
                     desc: str = "predict") -> list[Any]:
    """One prediction per example, what `task.metrics` scores and `task.prediction_record` writes: the
    generated text of a text-to-text task, else the task's decoding of the head's logits."""
    if isinstance(task, text_to_text.TextToTextTask):
        return task.predict(model, examples, tokenizer, max_length, batch_size, device, _autocast(device, bf16),
                            progress)
    labels = label_names_of(model)
    encoded = task.encode(examples, tokenizer, max_length, labels, train=False)
    logits = predict_logits(model, task, encoded, pad_id(tokenizer), batch_size, device, bf16, progress, desc)
    return task.decode(examples, encoded, logits, labels)


def evaluate_examples(model: TaskModel, task: Task, examples: list[Any], tokenizer: Any, max_length: int,
                      batch_size: int, device: torch.device, bf16: bool | None = None, progress: bool = False
                      ) -> tuple[list[Any], dict[str, float]]:
    """Predictions and metrics (percent) for labelled examples: fine-tuning's dev scores and `evaluate`."""
    predictions = predict_examples(model, task, examples, tokenizer, max_length, batch_size, device, bf16,
                                   progress, "dev")
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


def finetune(cfg: FinetuneConfig, callbacks: tuple[StepCallback, ...] = ()) -> dict[str, Any]:
    """Train, evaluate on dev as configured, and write the run directory. Returns a summary.

    Under torchrun every rank trains its share of each batch (DDP); rank 0 scores dev, keeps the best
    model and writes the run directory."""
    info, device = distributed.setup(cfg.device)
    try:
        return _finetune(cfg, info, device, callbacks)
    finally:
        distributed.teardown()


def _finetune(cfg: FinetuneConfig, info: DistInfo, device: torch.device,
              callbacks: tuple[StepCallback, ...]) -> dict[str, Any]:
    set_seed(cfg.seed)
    seq2seq = text_to_text.is_encoder_decoder(cfg.model)  # T5: every task as text to text
    task = text_to_text.get_text_task(cfg.task, cfg.options) if seq2seq else get_task(cfg.task, cfg.options)
    lr_given = cfg.lr is not None
    cfg = finetune_distill.resolve(apply_recipe(cfg, task))  # the recipe's and distillation's defaults filled
    max_length = cfg.max_length or default_max_length(cfg.task)
    out = Path(cfg.out)
    if cfg.resume:
        if not (out / CHECKPOINTS).is_dir():
            raise FileNotFoundError(f"{out}: --resume given but there is no {CHECKPOINTS}/ directory to resume from")
    elif info.is_main:
        check_out_dir(out, cfg.overwrite)
    distributed.barrier(info)

    splits = read_splits(task, cfg)
    train_examples, dev_examples = splits.train, splits.dev
    labels = task.label_names(train_examples)
    model_dir = Path(cfg.model)
    tokenizer = load_task_tokenizer(model_dir)
    if seq2seq and cfg.task_rnn:
        raise ValueError("--task-rnn adds a biLSTM under a task head; a text-to-text run has no such head")
    head_spec = task.head_spec(labels) if cfg.task_rnn is None else {**task.head_spec(labels), "task_rnn": cfg.task_rnn}
    model = (text_to_text.load_model(model_dir, HEAD) if seq2seq
             else keep_layers(load_backbone_with_head(model_dir, head_spec), cfg.student_layers))
    model = with_dropout(model, cfg.dropout).to(device)
    model, tokenizer, task = gpt_finetuning.adapt(model, tokenizer, task, HEAD)  # decoders: GPT-1 §3.3
    task = finetune_inputs.task_for(model, tokenizer, task)  # e.g. ELMo's characters in every batch
    if finetune_inputs.feature_based(model, cfg.update_backbone) and not lr_given:
        cfg = dataclasses.replace(cfg, lr=FEATURE_BASED_LR)
    if max_length > model.config.max_position_embeddings - model.config.position_offset:
        raise ValueError(f"--max-length {max_length} exceeds the model's positions")
    encoded = task.encode(train_examples, tokenizer, max_length, labels, train=True)
    features = encoded.features
    if not features:
        raise ValueError(f"{cfg.data}: no training features")
    source = TaskBatches(task, features, pad_id(tokenizer), cfg.batch_size, cfg.grad_accum, info.rank,
                         info.world_size, cfg.seed, finish=lambda batch: gpt_finetuning.with_lm_labels(model, batch))
    steps_per_epoch = source.steps_per_epoch
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    eval_every = eval_interval(cfg, steps_per_epoch)
    precision = resolve_precision(device, "auto" if cfg.bf16 is None else "bf16" if cfg.bf16 else "fp32")

    module = with_teacher(model, HEAD, task.name, tokenizer, cfg, max_length)  # the model, or it and a teacher
    models = {"": model}  # what checkpoints hold: never the teacher (re-read from cfg.teacher on resume)
    checkpoints = loop.Checkpoints(out / CHECKPOINTS, models, info, keep_last=1,
                                   config_text=json.dumps({**cfg.to_dict(), "resume": False}, sort_keys=True))
    heads = output_heads(models)
    training = loop.prepare(module, checkpoints, device, resume=cfg.resume,
                            wrap=lambda m: distributed.wrap(m, info, device, "ddp", find_unused=True),
                            make_optimizer=lambda m: build_optimizer(model, cfg.lr, cfg.weight_decay))
    best = Best.restore(training.extra, training.resumed_from)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps({**cfg.to_dict(), "task_type": task.task_type,
                                                   "eval_every_steps": eval_every}, indent=2) + "\n")
    logger = RunLogger(out, resume_step=training.state.step if training.resumed_from else None) if info.is_main else None

    def log(record: dict[str, Any]) -> None:  # the step's training record, then its dev scores
        assert logger is not None
        record = dict(record)
        dev = record.pop(DEV_KEY, None)
        epoch = record["step"] / steps_per_epoch
        logger.log({"kind": "train", **record, "epoch": epoch})
        if dev is not None:
            logger.log({"kind": "eval", "step": record["step"], "epoch": epoch, **dev})

    def evaluate(state: TrainState) -> dict[str, Any]:
        """Rank 0 scores dev with the unwrapped model (the other ranks wait in the next step's all-reduce)."""
        if dev_examples is None or not info.is_main:
            return {}
        _, scores = evaluate_examples(model, task, dev_examples, tokenizer, max_length, cfg.eval_batch_size,
                                      device, cfg.bf16, progress=cfg.progress)
        tqdm.write(f"step {state.step}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), file=sys.stderr)
        best.update(state.step, scores, task.main_metric, model if cfg.select_best else None)
        return {DEV_KEY: scores}

    settings = loop.LoopSettings(
        lr=cfg.lr, warmup=cfg.warmup_ratio, schedule="linear", grad_accum=cfg.grad_accum, grad_clip=cfg.max_grad_norm,
        precision=precision, total_steps=total_steps, log_every=1, eval_every=eval_every,
        checkpoint_every=eval_every if dev_examples is not None else steps_per_epoch, keep_last=1,
        progress=cfg.progress, desc=f"finetune {task.name}")
    hooks = loop.LoopHooks(evaluate=evaluate, log=log, extra_state=best.to_dict, write_extra=best.write,
                           should_stop=(lambda: best.since >= cfg.patience) if cfg.patience else None,
                           callbacks=callbacks)
    start = time.perf_counter() - training.state.elapsed
    loop.run(settings, training, source, checkpoints, heads, info, device, hooks)
    train_seconds = time.perf_counter() - start
    summary = None
    if info.is_main:
        assert logger is not None
        logger.close()
        summary = finish_run(cfg, task, model, tokenizer, out, splits, best, max_length, eval_every,
                             training.state.step, total_steps, len(features), train_seconds)
    distributed.barrier(info)
    return summary or {}


def finish_run(cfg: FinetuneConfig, task: Task, model: TaskModel, tokenizer: Any, out: Path, splits: Any,
               best: Best, max_length: int, eval_every: int, step: int, total_steps: int, num_features: int,
               train_seconds: float) -> dict[str, Any]:
    """Keep the selected model, write it with task.json, the plot and summary.json; the checkpoints
    go (the run finished: `evaluate`/`predict`/`convert` read the model)."""
    history = read_metrics(out)
    final = {"step": step, **(best.last_scores if best.last_step == step else {})}
    selected = best.state is not None
    if selected:
        model.load_state_dict(best.state)
    chosen = {"step": best.step, **(best.metrics or {})} if selected else final
    gpt_finetuning.drop_aux_head(model)
    save_model(model.to("cpu"), out, tokenizer)
    (out / TASK_FILE).write_text(json.dumps({"task": cfg.task, "task_name": task.name, "max_length": max_length,
                                             "options": task.options.to_dict(), "holdout": splits.holdout},
                                            indent=2) + "\n")
    plot_history(history, task.main_metric, out / "training.png")
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    evaluations = sum(r["kind"] == "eval" for r in history)
    summary = {"task": task.name, "task_type": task.task_type,
               "hyperparameters": {"lr": cfg.lr, "batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                                   "epochs": cfg.epochs, "warmup_ratio": cfg.warmup_ratio,
                                   "eval_every_steps": eval_every, "dropout": cfg.dropout},
               "train_examples": len(splits.train), "train_features": num_features,
               "steps": step, "planned_steps": total_steps, "train_seconds": train_seconds, "main_metric": task.main_metric,
               "metric_scale": "percent", "selected": chosen, "final": final,
               "dev_examples": len(splits.dev) if splits.dev is not None else 0, "dev_source": splits.dev_source,
               "selection": selection_note(selected, evaluations, task.main_metric, best.step, step, total_steps)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
