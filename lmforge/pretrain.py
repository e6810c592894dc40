"""`lmforge pretrain`: config -> datasets -> model for the objective -> the training loop -> final model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lmforge.train import distributed
from lmforge.train.config import PretrainConfig
from lmforge.train.models import build_pretraining_model
from lmforge.train.trainer import StepCallback, TrainResult, train

# files a tokenizer directory may hold (lmforge tokenizer train / HF fast-tokenizer layouts)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json")


def tokenizer_files(config: PretrainConfig) -> tuple[Path, ...]:
    """The tokenizer the data was prepared with, copied into the final model dir."""
    candidates = [Path(config.data.tokenizer_dir)] if config.data.tokenizer_dir else []
    prepared = Path(config.data.prepared_dir)
    candidates += [prepared / "tokenizer", prepared]
    for directory in candidates:
        found = tuple(directory / name for name in TOKENIZER_FILES if (directory / name).is_file())
        if found:
            return found
    if config.data.tokenizer_dir:
        raise FileNotFoundError(f"{config.data.tokenizer_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return ()


def open_datasets(config: PretrainConfig) -> tuple[Any, Any | None]:
    from lmforge.data.pretraining import PretrainingDataset

    if not config.data.prepared_dir:
        raise ValueError("data.prepared_dir is not set (the directory `lmforge prepare` wrote)")
    prepared = Path(config.data.prepared_dir)
    if not prepared.is_dir():
        raise FileNotFoundError(f"{prepared}: prepared data directory not found (run `lmforge prepare`)")
    train_set = PretrainingDataset(prepared, config.objective, seed=config.seed, split="train")
    try:
        eval_set = PretrainingDataset(prepared, config.objective, seed=config.seed, split="valid")
    except FileNotFoundError:
        eval_set = None
    if eval_set is not None and len(eval_set) == 0:
        eval_set = None
    return train_set, eval_set


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pretrain(config: PretrainConfig, *, resume: bool = False, train_set: Dataset | None = None,
             eval_set: Dataset | None = None, callbacks: tuple[StepCallback, ...] = ()) -> TrainResult:
    """Run (or resume) pre-training. Datasets default to the prepared dir; tests pass their own."""
    if config.system.threads > 0:
        torch.set_num_threads(config.system.threads)
    info, device = distributed.setup(config.system.device)
    try:
        if train_set is None:
            train_set, eval_set = open_datasets(config)
        seed_everything(config.seed)  # same initial weights on every rank; DDP also broadcasts rank 0's
        pad = getattr(getattr(train_set, "special", None), "pad", None)
        module, models = build_pretraining_model(config, train_set.vocab_size, pad)
        if info.is_main:
            params = sum(p.numel() for p in module.parameters())
            print(f"pretrain: {config.objective.kind} on {config.model.preset} ({params / 1e6:.2f}M parameters), "
                  f"{len(train_set)} training examples, world size {info.world_size}, device {device}")
        files = tokenizer_files(config) if config.data.prepared_dir else ()
        return train(config, module, models, train_set, eval_set, info, device, resume=resume,
                     callbacks=callbacks, tokenizer_files=files)
    finally:
        distributed.teardown()


def main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
