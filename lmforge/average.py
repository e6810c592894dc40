"""Checkpoint averaging (Vaswani et al. 2017 §6.1: "For the base models, we used a single model obtained
by averaging the last 5 checkpoints, which were written at 10-minute intervals. For the big models, we
averaged the last 20 checkpoints."): the element-wise mean of the weights of several checkpoints of one
run, which smooths the noise of the last optimizer steps at no training cost.

Works on lmforge model directories (config.json + model.safetensors), e.g. the model dirs inside a
run's `checkpoints/step-N/` (lmforge.train.checkpoint); they must be the same model (config, heads,
tensor names, shapes, dtypes). The mean is taken in float64 and written in each tensor's own dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lmforge.config import WEIGHTS_FILE, CheckpointConfig
from lmforge.train.checkpoint import checkpoint_problem, list_checkpoints
from lmforge.weights import load_weights, save_weights


def _same_model(first: CheckpointConfig, other: CheckpointConfig, where: Path) -> None:
    if other.model != first.model or other.heads != first.heads:
        raise ValueError(f"{where}: a different model (config or heads) than the first checkpoint; "
                         "only checkpoints of one run can be averaged")


def _check_tensors(first: dict[str, torch.Tensor], other: dict[str, torch.Tensor], where: Path) -> None:
    if other.keys() != first.keys():
        diff = sorted(set(first) ^ set(other))
        raise ValueError(f"{where}: tensors differ from the first checkpoint's: {diff[:5]}")
    for key, tensor in other.items():
        if tensor.shape != first[key].shape or tensor.dtype != first[key].dtype:
            raise ValueError(f"{where}: {key} is {tuple(tensor.shape)} {tensor.dtype}, the first checkpoint's "
                             f"{tuple(first[key].shape)} {first[key].dtype}")


def average_model_dirs(directories: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write the average of these lmforge model directories to `out_dir` (config of the first).
    Integer tensors (none in lmforge's models today) must be equal in all of them."""
    paths = [Path(d) for d in directories]
    if not paths:
        raise ValueError("no checkpoints to average")
    config = CheckpointConfig.load(paths[0])
    first = load_weights(paths[0] / WEIGHTS_FILE)
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.items()}
    for path in paths[1:]:
        _same_model(config, CheckpointConfig.load(path), path)
        state = load_weights(path / WEIGHTS_FILE)
        _check_tensors(first, state, path)
        for key, tensor in state.items():
            if tensor.is_floating_point():
                sums[key] += tensor.double()
            elif not torch.equal(tensor, first[key]):
                raise ValueError(f"{path}: integer tensor {key} differs; it cannot be averaged")
    averaged = {k: (v / len(paths)).to(first[k].dtype) if first[k].is_floating_point() else v
                for k, v in sums.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(averaged, out / WEIGHTS_FILE)
    config.save(out)
    return out


def average_last_checkpoints(root: str | Path, count: int, out_dir: str | Path, sub: str = "") -> Path:
    """Average the model `sub` (the run's model: "") of the last `count` intact checkpoints under
    `root` (a run's `checkpoints/`). Fewer than `count` is an error: the run must keep that many
    (`keep_last` >= count), or the average silently covers fewer steps than asked."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    intact = [path for _, path in list_checkpoints(root) if checkpoint_problem(path) is None]
    if len(intact) < count:
        raise ValueError(f"{root}: {len(intact)} intact checkpoints, {count} asked for; keep at least {count} "
                         "(trainer keep_last) to average them")
    return average_model_dirs([path / sub if sub else path for path in intact[-count:]], out_dir)
