"""Atomic training checkpoints and the state an exact resume needs.

A checkpoint is a directory `checkpoints/step-NNNNNNN/` holding the model(s) as lmforge model
dirs (model.safetensors + config.json), `trainer_state.pt` (optimizer state, counters, the
config used) and one `rng-rankR.pt` per rank. It is written under a temporary name, fsynced and
renamed, so a kill at any moment leaves either the previous checkpoint or the new one complete.
Every `.pt` file holds only tensors and plain containers and is read with weights_only=True.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.models import TaskModel, save_model
from lmforge.models.task_model import load_state
from lmforge.weights import load_weights

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
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def begin(root: Path, step: int) -> Path:
    """Rank 0 makes the temporary directory every rank writes into."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step:07d}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left over from a kill during an earlier save
    tmp.mkdir()
    return tmp


def write_models(tmp: Path, models: dict[str, TaskModel]) -> None:
    for sub, model in models.items():
        save_model(model, tmp / sub if sub else tmp)


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
