"""Reading and writing weight files safely.

safetensors holds only tensors, so it cannot run code. PyTorch `.bin` files are pickles: they are
opened with `torch.load(weights_only=True)`, which refuses any pickle that would build objects
other than tensors and plain containers. Nothing here ever unpickles arbitrary code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lmforge.atomic import atomic_path


class UnsafeCheckpointError(ValueError):
    """A weight file asked to run code (or is not a weight file at all)."""


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the pickle wants to run code or build non-tensor objects "
            f"({str(err).splitlines()[0]}). Convert trusted checkpoints to safetensors."
        ) from None
    except Exception as err:
        raise ValueError(f"{path}: not a readable PyTorch weight file ({err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a mapping of names to tensors")
    return state


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the second and later names of a shared (tied) tensor; safetensors stores each once."""
    seen: set[tuple[int, int]] = set()
    kept = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        kept[name] = tensor.detach().contiguous()
    return kept


def save_weights(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write atomically (a crash leaves the old file or the new one, never half of one), with the
    permissions the user's umask gives, not mkstemp's 0600."""
    with atomic_path(path) as tmp:
        save_file(unique_tensors(state), str(tmp), metadata=metadata or {"format": "pt"})
