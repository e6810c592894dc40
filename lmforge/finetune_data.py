"""Where a fine-tuning run's examples come from, and where it goes: train/dev from the task's files
(one file split into both, seeded), the same held-out dev again for `evaluate`, and a run directory
that is never written over silently."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.tasks import Task
from lmforge.tasks.base import split_holdout

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
        first = missing[0]
        where = getattr(first, "source", str(data))
        line = f":{first.line}" if getattr(first, "line", None) else ""
        raise ValueError(f"{where}{line}: split {split!r} has no labels ({len(missing)} of {len(examples)} "
                         "examples unlabelled); `lmforge predict` predicts unlabelled data")
    return examples
