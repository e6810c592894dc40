"""`lmforge pretrain`: config -> datasets -> model for the objective -> the training loop -> final model."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lmforge.jsonfile import load_json
from lmforge.models import TaskModel
from lmforge.objectives.registry import make_objective
from lmforge.tokenizers import TOKENIZER_FILES, has_tokenizer, load_tokenizer, vocab_fingerprint
from lmforge.train import distributed
from lmforge.train.config import PretrainConfig
from lmforge.train.models import build_pretraining_model
from lmforge.train.trainer import StepCallback, TrainResult, train

log = logging.getLogger(__name__)

# what an earlier `lmforge pretrain` leaves in a run directory: --overwrite deletes only such folders
RUN_DIR_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints", "final")


# --------------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------------
def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """A non-empty run directory is someone's earlier run: continue it (--resume) or replace it
    (--overwrite), never mix the two (its checkpoints would outlive, and outrank, the new ones)."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in run_dir, --overwrite deletes it: give one of them")
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: run_dir exists and is not a directory")
    if resume or not any(run_dir.iterdir()):
        return
    if not overwrite:
        raise ValueError(f"{run_dir}: the run directory is not empty (an earlier run?); pass --resume to "
                         f"continue it, --overwrite to replace it, or choose another run_dir")
    if not any((run_dir / name).exists() for name in RUN_DIR_MARKERS):
        raise ValueError(f"{run_dir}: not empty and not an lmforge run directory (none of "
                         f"{', '.join(RUN_DIR_MARKERS)}); --overwrite refuses to delete it")


def clear_run_dir(run_dir: Path) -> None:
    for path in run_dir.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


# --------------------------------------------------------------------------------------------
# The tokenizer: found, checked against the data, shipped with the model
# --------------------------------------------------------------------------------------------
def read_manifest(prepared: Path) -> dict[str, Any]:
    path = prepared / "manifest.json"
    return load_json(path, missing=f"not found; is {prepared} a folder `lmforge prepare` wrote?")


def data_tokenizer_dir(config: PretrainConfig, manifest: dict[str, Any]) -> Path:
    """data.tokenizer_dir if set, else the copy `lmforge prepare` keeps beside the data, else the
    path the manifest recorded (data prepared before that copy existed)."""
    if config.data.tokenizer_dir:
        directory = Path(config.data.tokenizer_dir)
        if not has_tokenizer(directory):
            raise FileNotFoundError(f"{directory}: data.tokenizer_dir has no tokenizer "
                                    f"({', '.join(TOKENIZER_FILES[:3])}, ...)")
        return directory
    prepared = Path(config.data.prepared_dir)
    recorded = manifest.get("tokenizer", {})
    candidates = [prepared / recorded.get("dir", "tokenizer")]
    if recorded.get("path"):
        path = Path(recorded["path"])
        candidates.append(path.parent if path.suffix == ".json" else path)
    for directory in candidates:
        if has_tokenizer(directory):
            return directory
    raise FileNotFoundError(f"{prepared}: no tokenizer beside the prepared data and none at the path its manifest "
                            f"records ({recorded.get('path')}); set data.tokenizer_dir=DIR to the tokenizer "
                            f"the data was prepared with")


def check_tokenizer_matches_data(directory: Path, manifest: dict[str, Any], prepared: Path,
                                 what: str = "data.tokenizer_dir") -> None:
    """The tokenizer in `directory` must be the one the data was prepared with: same token -> id table
    (or, for data prepared before the table was recorded, the same tokenizer.json or the same size).
    Then the model, whose vocabulary is the data's (or init_from's, checked larger), fits it too."""
    tokenizer = load_tokenizer(directory)
    recorded = manifest.get("tokenizer", {})
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if "vocab_sha256" in recorded:
        same = vocab_fingerprint(tokenizer) == recorded["vocab_sha256"]
    else:
        file = directory / "tokenizer.json"
        from lmforge.data.encode import file_sha256

        same = (file.is_file() and file_sha256(file) == recorded.get("sha256")) or size == manifest["vocab_size"]
    if not same:
        raise ValueError(f"{what}={directory}: not the tokenizer {prepared} was prepared with "
                         f"({size} tokens vs the data's {manifest['vocab_size']}, different token ids); "
                         f"prepare the data with this tokenizer or point {what} to the data's own")


def check_vocab_override(config: PretrainConfig, data_vocab: int) -> None:
    override = config.model.overrides.get("vocab_size")
    if override is not None and int(override) < data_vocab:
        raise ValueError(f"model.overrides.vocab_size={override} is smaller than the prepared data's vocabulary "
                         f"({data_vocab} token ids); drop the override (the data sets it) or raise it")


def check_prepared_data(config: PretrainConfig) -> Path:
    """Before anything is built: the prepared data exists, the model can index its ids, and the
    tokenizer that will ship with the model (and init_from's own) is the one it was prepared with.
    Returns the directory of that tokenizer."""
    if not config.data.prepared_dir:
        raise ValueError("data.prepared_dir is not set (the directory `lmforge prepare` wrote)")
    prepared = Path(config.data.prepared_dir)
    if not prepared.is_dir():
        raise FileNotFoundError(f"{prepared}: prepared data directory not found (run `lmforge prepare`)")
    manifest = read_manifest(prepared)
    check_vocab_override(config, manifest["vocab_size"])
    tok_dir = data_tokenizer_dir(config, manifest)
    check_tokenizer_matches_data(tok_dir, manifest, prepared)
    log.info("tokenizer %s: the one %s was prepared with; it goes to final/", tok_dir, prepared)
    if config.model.init_from and has_tokenizer(config.model.init_from):
        check_tokenizer_matches_data(Path(config.model.init_from), manifest, prepared, "model.init_from")
    return tok_dir


def tokenizer_files(directory: Path | None) -> tuple[Path, ...]:
    if directory is None:
        return ()
    return tuple(directory / name for name in TOKENIZER_FILES if (directory / name).is_file())


# --------------------------------------------------------------------------------------------
# Datasets and models
# --------------------------------------------------------------------------------------------
def open_datasets(config: PretrainConfig) -> tuple[Any, Any | None]:
    from lmforge.data.pretraining import PretrainingDataset

    prepared = Path(config.data.prepared_dir)
    train_set = PretrainingDataset(prepared, config.objective, seed=config.seed, split="train")
    try:
        eval_set = PretrainingDataset(prepared, config.objective, seed=config.seed, split="valid")
    except FileNotFoundError:
        eval_set = None
    if eval_set is not None and len(eval_set) == 0:
        eval_set = None
    return train_set, eval_set


def init_from_pretrained(config: PretrainConfig, data_vocab: int) -> TaskModel:
    """Continued pre-training: the model in `model.init_from` with the objective's heads (its own
    weights for the heads it has, fresh ones for the rest)."""
    from lmforge.convert import load_pretrained
    from lmforge.models.task_model import load_state

    source_dir = Path(config.model.init_from)
    objective = make_objective(config.objective)
    if not objective.heads:  # a composite model (ELECTRA's generator + discriminator) starts from scratch
        raise ValueError(f"model.init_from: objective {objective.kind} trains its own composite model from scratch; "
                         "continue one of its saved models with a single-model objective (e.g. objective.kind=mlm)")
    source = load_pretrained(source_dir)
    model_config = source.config.replace(**config.model.overrides) if config.model.overrides else source.config
    if data_vocab > model_config.vocab_size:
        raise ValueError(f"model.init_from={source_dir}: the model has {model_config.vocab_size} embedding rows "
                         f"but the prepared data has {data_vocab} token ids; prepare the data with the model's "
                         f"tokenizer (lmforge prepare --tokenizer {source_dir})")
    try:  # causal vs encoder, segments, positions
        objective.check_model(model_config)
    except ValueError as err:
        raise ValueError(f"model.init_from={source_dir}: {err}") from None
    heads = objective.heads
    model = TaskModel(model_config, heads)
    own = source.head_specs()
    kept = tuple(f"heads.{name}." for name, spec in heads.items() if own.get(name, {}).get("kind") == spec["kind"])
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("heads.") or k.startswith(kept)}
    load_state(model, state, str(source_dir), allow_missing_heads=True)
    return model


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pretrain(config: PretrainConfig, *, resume: bool = False, overwrite: bool = False,
             train_set: Dataset | None = None, eval_set: Dataset | None = None,
             callbacks: tuple[StepCallback, ...] = ()) -> TrainResult:
    """Run (or resume) pre-training. Datasets default to the prepared dir; tests pass their own."""
    if config.system.threads > 0:
        torch.set_num_threads(config.system.threads)
    run_dir = Path(config.run_dir)
    check_run_dir(run_dir, resume=resume, overwrite=overwrite)  # every rank, before any rank writes
    info, device = distributed.setup(config.system.device)
    try:
        distributed.barrier(info)
        if overwrite and info.is_main and run_dir.is_dir():
            clear_run_dir(run_dir)
        distributed.barrier(info)
        tok_dir = None
        if train_set is None:
            tok_dir = check_prepared_data(config)
            train_set, eval_set = open_datasets(config)
        seed_everything(config.seed)  # same initial weights on every rank; DDP also broadcasts rank 0's
        if config.model.init_from:
            model = init_from_pretrained(config, train_set.vocab_size)
            module, models = model, {"": model}
        else:
            pad = getattr(getattr(train_set, "special", None), "pad", None)
            module, models = build_pretraining_model(config, train_set.vocab_size, pad)
        if info.is_main:
            # what is trained and saved (a distillation teacher is frozen and not counted)
            params = sum(p.numel() for p in module.parameters() if p.requires_grad)
            source = f"init from {config.model.init_from}" if config.model.init_from else config.model.preset
            print(f"pretrain: {config.objective.kind} on {source} ({params / 1e6:.2f}M parameters), "
                  f"{len(train_set)} training examples, world size {info.world_size}, device {device}")
        result = train(config, module, models, train_set, eval_set, info, device, resume=resume,
                       callbacks=callbacks, tokenizer_files=tokenizer_files(tok_dir))
        if config.export.hf and info.is_main and result.final_dir is not None:
            export_hf(result.final_dir, run_dir / "hf")
        return result
    finally:
        distributed.teardown()


def export_hf(final_dir: Path, out: Path) -> Path:
    """`export.hf=true`: the same folder `lmforge convert --to-hf final/ --out hf/` writes."""
    from lmforge.convert import convert_to_hf

    if out.exists():
        shutil.rmtree(out)
    convert_to_hf(final_dir, out)
    print(f"pretrain: HuggingFace export in {out}", file=sys.stderr)
    return out


def main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
