"""A tiny saved teacher for the distillation tests (the toy data's vocabulary and widths)."""

from __future__ import annotations

from pathlib import Path

import torch

from lmforge.config import ModelConfig
from lmforge.models import TaskModel, save_model

TINY = dict(vocab_size=40, hidden_size=32, num_heads=2, intermediate_size=64, max_position_embeddings=32)


def tiny_teacher(directory: Path, num_layers: int = 2, heads: dict | None = None, seed: int = 0,
                 **fields: int) -> Path:
    """A bert-tiny-shaped teacher with an MLM head (random weights: a fixed target is all a test needs)."""
    torch.manual_seed(seed)
    config = ModelConfig.from_name("bert-tiny", num_layers=num_layers, **{**TINY, **fields})
    return save_model(TaskModel(config, {"mlm": {"kind": "mlm"}} if heads is None else heads), directory)
