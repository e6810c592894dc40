"""Reading an HF model directory: config.json and its weights (single file or sharded), safely.

Weights go through `lmforge.weights.load_weights`: safetensors, or `.bin` pickles opened with
`torch.load(weights_only=True)`, which refuses pickles that would run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.jsonfile import load_json
from lmforge.weights import load_weights

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def read_json(path: Path) -> dict[str, Any]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def read_hf_config(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory")
    return read_json(directory / "config.json")


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """All tensors of the checkpoint, shards merged; and the file they came from (for messages)."""
    path = weights_file(directory)
    if not path.name.endswith(".index.json"):
        return load_weights(path), path
    index = read_json(path)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{path}: no 'weight_map' object")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = directory / shard
        if Path(shard).name != shard:
            raise ValueError(f"{path}: shard name {shard!r} must be a file in the same directory")
        for key, tensor in load_weights(shard_path).items():
            if weight_map.get(key) != shard:
                raise ValueError(f"{shard_path}: tensor {key} is not listed for this shard in {path.name}")
            state[key] = tensor
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"{path}: tensors listed but not found in their shards: {missing}")
    return state, path


def strip_prefix(state: dict[str, torch.Tensor], prefix: str, source: str) -> tuple[dict[str, torch.Tensor], bool]:
    """HF head models store the backbone under `prefix.`; base models (and some hub files, e.g.
    gpt2's) store it bare. Return the bare form and whether the prefix was used."""
    dotted = prefix + "."
    out: dict[str, torch.Tensor] = {}
    used = False
    for key, tensor in state.items():
        bare = key[len(dotted):] if key.startswith(dotted) else key
        used |= bare != key
        if bare in out:
            raise ValueError(f"{source}: tensor {bare} appears both with and without the {dotted!r} prefix")
        out[bare] = tensor
    return out, used
