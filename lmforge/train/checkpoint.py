"""Atomic training checkpoints and the state an exact resume needs.

A checkpoint is a directory `checkpoints/step-NNNNNNN/` holding the model(s) as lmforge model
dirs (model.safetensors + config.json), `trainer_state.pt` (optimizer state, counters, the
config used) and one `rng-rankR.pt` per rank. Under FSDP the weights and optimizer state are
gathered to full, unsharded tensors first, so the files are the same whatever the strategy. It is written under a temporary name, fsynced and
renamed, so a kill at any moment leaves either the previous checkpoint or the new one complete.
A checkpoint damaged afterwards (a full disk, a copy cut short) is detected on resume and passed
over for the newest intact one. Every `.pt` file holds only tensors and plain containers and is
read with weights_only=True.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.config import WEIGHTS_FILE, CheckpointConfig
from lmforge.models import TaskModel, save_model
from lmforge.models.task_model import load_state
from lmforge.train.distributed import is_sharded, reshard
from lmforge.weights import load_weights, save_weights

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# --------------------------------------------------------------------------------------------
# RNG: every generator that can influence a step (dropout, masking fallbacks, ELECTRA sampling)
# --------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


# --------------------------------------------------------------------------------------------
# Directory handling
# --------------------------------------------------------------------------------------------
def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")) + [directory]:
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted(p for p in directory.rglob("*") if p.is_dir()) + [directory]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place), oldest first; temporary dirs are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest checkpoint that is intact (see `checkpoint_problem`). Damaged newer ones are
    reported, and renamed to `damaged-step-N` so that neither a later resume nor `keep_last`
    pruning counts them; the choice is printed, so a fallback is never silent."""
    found = list_checkpoints(root)
    main = int(os.environ.get("RANK", "0")) == 0
    for step, path in reversed(found):
        try:
            problem = checkpoint_problem(path)
        except OSError as err:  # e.g. moved aside by rank 0 while this rank looked at it
            problem = f"unreadable ({err})"
        if problem is None:
            if main:
                newest = "" if step == found[-1][0] else ", the newest intact one"
                print(f"resume: from {path} (step {step}{newest})", file=sys.stderr)
            return path
        if main:
            print(f"resume: skipping {path}: {problem}", file=sys.stderr)
            aside = path.with_name(f"damaged-{path.name}")
            if aside.exists():
                shutil.rmtree(aside)  # an earlier damaged copy of the same step
            path.rename(aside)
    return None


def checkpoint_problem(directory: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (None when it can): an empty or unreadable trainer
    state, a missing RNG state, or a weight file that is not a complete safetensors file."""
    state = directory / STATE_FILE
    if state.stat().st_size == 0:
        return f"{STATE_FILE} is empty"
    try:
        torch.load(state, map_location="cpu", weights_only=True, mmap=True)  # mmap: the check reads little
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ...
        return f"{STATE_FILE} is unreadable ({str(err).splitlines()[0]})"
    if not (directory / "rng-rank0.pt").is_file():
        return "rng-rank0.pt is missing"
    weights = sorted(directory.rglob(WEIGHTS_FILE))
    if not weights:
        return f"no {WEIGHTS_FILE}"
    for path in weights:
        problem = safetensors_problem(path)
        if problem is not None:
            return f"{path.relative_to(directory)}: {problem}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensor bytes; the
    header's last data offset says how long the file must be (a cheap check, no tensor is read)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if 8 + length > size:
                return f"truncated ({size} bytes, header alone needs {8 + length})"
            header = json.loads(handle.read(length))
    except (struct.error, ValueError, UnicodeDecodeError):
        return "not a safetensors file (unreadable header)"
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    if size != 8 + length + end:
        return f"truncated ({size} bytes, expected {8 + length + end})"
    return None


def begin(root: Path, step: int) -> Path:
    """Rank 0 makes the temporary directory every rank writes into."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from a kill during an earlier save
    tmp.mkdir()
    return tmp


def full_states(module: nn.Module, models: dict[str, TaskModel], is_main: bool) -> dict[str, dict] | None:
    """Full, unsharded CPU weights of each saved model under FSDP: a collective every rank must join;
    only the main rank gets the tensors. None when the models are not sharded (save them as they are).

    `module` is the (possibly sharded) root the models live in; the models are it or its children."""
    if not is_sharded(module):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    reshard(module)
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered on rank 0 only
    states = {sub: get_model_state_dict(model, options=options) for sub, model in models.items()}
    return states if is_main else None


def write_models(tmp: Path, models: dict[str, TaskModel], states: dict[str, dict] | None = None) -> None:
    """The lmforge model dirs (model.safetensors + config.json). `states` (from full_states) replaces
    the live state dicts, so a sharded model is written in exactly the unsharded format."""
    for sub, model in models.items():
        directory = tmp / sub if sub else tmp
        if states is None:
            save_model(model, directory)
            continue
        directory.mkdir(parents=True, exist_ok=True)
        tied = model.tied_keys()
        save_weights({k: v for k, v in states[sub].items() if k not in tied}, directory / WEIGHTS_FILE)
        CheckpointConfig(model=model.config, heads=model.head_specs()).save(directory)


# --------------------------------------------------------------------------------------------
# Optimizer state: torch's own format unsharded; parameter names when sharded (FSDP)
# --------------------------------------------------------------------------------------------
def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()`; under FSDP the full (unsharded) state keyed by parameter name,
    gathered to CPU with a collective every rank must join (non-main ranks get an empty dict)."""
    if not is_sharded(module):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    reshard(module)
    return get_optimizer_state_dict(module, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Either format into either kind of model: a name-keyed (FSDP) state is split into this rank's
    shards (or loaded whole on one process); torch's index-keyed format loads directly unsharded."""
    keyed_by_name = any(isinstance(k, str) for k in saved.get("state", {}))
    if not keyed_by_name and not is_sharded(module):
        optimizer.load_state_dict(saved)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if not keyed_by_name:
        saved = _names_for_indices(module, optimizer, saved)
    # strict=False: parameters that never received a gradient (e.g. an unused pooler) have no state
    set_optimizer_state_dict(module, optimizer, saved, options=StateDictOptions(full_state_dict=True, strict=False))


def _names_for_indices(module: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict:
    """torch's index-keyed optimizer state -> name-keyed: index i is the i-th parameter over the
    param groups, which build_optimizer lays out identically for the same model."""
    names = {id(p): n for n, p in module.named_parameters()}  # first name of a tied tensor
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved_order = [i for group in saved["param_groups"] for i in group["params"]]
    if len(order) != len(saved_order):
        raise ValueError(f"optimizer state has {len(saved_order)} parameters; the model has {len(order)}")
    name_of = dict(zip(saved_order, order))
    groups = [{**g, "params": [name_of[i] for i in g["params"]]} for g in saved["param_groups"]]
    return {"state": {name_of[i]: v for i, v in saved["state"].items()}, "param_groups": groups}


def write_rank_rng(tmp: Path, rank: int) -> None:
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def commit(tmp: Path, root: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write the trainer state last, fsync everything, rename into place, prune old checkpoints."""
    torch.save(state, tmp / STATE_FILE)
    _fsync_tree(tmp)
    final = root / f"step-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if keep_last > 0:
        for _, old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: unreadable trainer state ({err})") from None


def load_rank_rng(directory: Path, rank: int) -> dict[str, Any]:
    path = directory / f"rng-rank{rank}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no RNG state for rank {rank} (resumed with a different world size?)")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_models(directory: Path, models: dict[str, TaskModel]) -> None:
    """Load weights into the live models in place (shared tensors keep being shared)."""
    for sub, model in models.items():
        path = (directory / sub if sub else directory) / "model.safetensors"
        state = load_weights(path)
        device = next(model.parameters()).device
        load_state(model, {k: v.to(device) for k, v in state.items()}, str(path))
