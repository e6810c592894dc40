"""Where a fine-tuning run's examples come from, and where it goes: train/dev from the task's files
(one file split into both, seeded), the same held-out dev again for `evaluate`, and a run directory
that is never written over silently."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmforge.tasks import Task
from lmforge.tasks.base import feature_length, split_holdout

if TYPE_CHECKING:
    from lmforge.finetune import FinetuneConfig

TASK_FILE = "task.json"


@dataclass
class Splits:
    train: list[Any]
    dev: list[Any] | None
    dev_source: str  # where dev came from, for the summary
    holdout: dict[str, Any] | None = None  # how dev was cut out of the training file (for evaluate)


def check_out_dir(out: Path, overwrite: bool) -> None:
    """A run never lands on another silently: a non-empty --out is refused unless --overwrite, and
    --overwrite replaces only an earlier fine-tuning run (its stale eval_*.json go with it)."""
    if not out.is_dir() or not any(out.iterdir()):
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a directory; choose another --out")
        return
    if not overwrite:
        raise ValueError(f"{out}: not empty; --overwrite replaces the fine-tuning run there, or choose another --out")
    if not (out / TASK_FILE).is_file():
        raise ValueError(f"{out}: not empty and not a fine-tuning run (no {TASK_FILE}); --overwrite refuses to replace it")
    for stale in out.glob("eval_*.json"):
        stale.unlink()


def read_splits(task: Task, cfg: FinetuneConfig) -> Splits:
    """Train and dev examples. One file given for both is split (seeded, cfg.dev_fraction) so that
    training data is never scored as dev; with --dev-fraction 0 there is no dev at all."""
    data = Path(cfg.data)
    train = task.read(data, "train")
    if task.same_examples(data, "train", "dev"):
        path = task.path_of(data, "train")
        if cfg.dev_fraction == 0:
            return Splits(train[: cfg.limit], None, f"none ({path} is the only file and --dev-fraction is 0)")
        train, dev = split_holdout(task, train, cfg.dev_fraction, cfg.seed)
        holdout = {"file": str(path.resolve()), "fraction": cfg.dev_fraction, "seed": cfg.seed}
        return Splits(train[: cfg.limit], dev[: cfg.eval_limit],
                      f"{len(dev)} examples ({cfg.dev_fraction:g}) held out of {path}, seed {cfg.seed}", holdout)
    try:
        dev = task.read(data, "dev")[: cfg.eval_limit]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err}; give --dev-file, or one --data file to split") from None
    return Splits(train[: cfg.limit], dev, str(task.path_of(data, "dev")))


def saved_split(task: Task, data: Path, split: str, saved: dict[str, Any]) -> list[Any]:
    """Labelled examples of `split` as the run saw them: when fine-tuning held dev out of this very file,
    'dev' and 'train' are the two sides of that same seeded split. Unlabelled data is refused."""
    examples = task.read(data, split)
    holdout = saved.get("holdout")
    if holdout and split in ("train", "dev") and str(task.path_of(data, split).resolve()) == holdout["file"]:
        train, dev = split_holdout(task, examples, holdout["fraction"], holdout["seed"])
        examples = dev if split == "dev" else train
    missing = [e for e in examples if not task.is_labelled(e)]
    if missing:
        raise ValueError(f"{task.where(missing[0], data)}: split {split!r} has no labels ({len(missing)} of "
                         f"{len(examples)} examples unlabelled); `lmforge predict` predicts unlabelled data")
    return examples


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


class TaskBatches:
    """Fine-tuning features as the shared loop's micro-batches (lmforge.train.loop.MicroBatches).

    `batch_size` is the global batch, the number the recipes and BERT's grids speak of, whatever the
    hardware: each length-grouped batch is cut into world_size x grad_accum micro-batches, micro-batch
    a of rank r being part r*grad_accum + a. Epoch e's batches are the (e+1)-th draw of one generator
    seeded with `seed`, so a resumed run regenerates exactly the order it had."""

    def __init__(self, task: Task, features: list[Any], pad: int, batch_size: int, grad_accum: int,
                 rank: int, world_size: int, seed: int,
                 finish: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = lambda b: b) -> None:
        self.parts = grad_accum * world_size
        if batch_size % self.parts:
            raise ValueError(f"batch size {batch_size} is not divisible by grad_accum x world size = {self.parts}")
        self.task, self.features, self.pad, self.finish = task, features, pad, finish
        self.batch_size, self.grad_accum, self.rank, self.seed = batch_size, grad_accum, rank, seed
        self.lengths = [feature_length(f) for f in features]
        full, rest = divmod(len(features), batch_size)
        # the one short batch of an epoch is kept when every micro-batch gets an example
        self.steps_per_epoch = full + (rest >= self.parts)

    def global_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed)
        for _ in range(epoch + 1):
            batches = length_grouped_batches(self.lengths, self.batch_size, rng)
        return [b for b in batches if len(b) >= self.parts]

    def epoch(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        for indices in self.global_batches(epoch)[start_step:]:
            parts = np.array_split(np.asarray(indices), self.parts)
            for a in range(self.grad_accum):
                chunk = parts[self.rank * self.grad_accum + a].tolist()
                yield self.finish(self.task.collate([self.features[i] for i in chunk], self.pad))
