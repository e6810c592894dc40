"""Training and held-out metrics from the heads' own counts, summed over batches and ranks before
dividing (so a metric over 4 ranks equals the metric over their union)."""

from __future__ import annotations

import torch

from lmforge.heads import Head, HeadOutput
from lmforge.models import TaskModel
from lmforge.train.distributed import DistInfo, all_reduce_mean


class Counts:
    """Sums for evaluation metrics, reduced over ranks before dividing."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def reduce(self, info: DistInfo, device: torch.device) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.tensor([self.sums[k] for k in keys], dtype=torch.float64, device=device)
        values = all_reduce_mean(values, info) * info.world_size
        return dict(zip(keys, values.tolist()))


def output_heads(models: dict[str, TaskModel]) -> dict[str, Head]:
    """The heads behind the names in `ModelOutput.heads`, gathered from the saved models (a composite
    such as ELECTRA reports its generator's and its discriminator's heads side by side)."""
    heads: dict[str, Head] = {}
    for model in models.values():
        for name, head in model.heads.items():
            if name in heads:
                raise ValueError(f"two pre-training models both have a head named {name!r}")
            heads[name] = head
    return heads


def head_counts(counts: Counts, outputs: dict[str, HeadOutput], heads: dict[str, Head]) -> None:
    """Each head's metric numerators/denominators for this batch."""
    for name, out in outputs.items():
        if name in heads and out.labels is not None and out.loss is not None:
            for key, value in heads[name].metric_counts(name, out).items():
                counts.add(key, value)


def metrics_from_counts(sums: dict[str, float], prefix: str, heads: dict[str, Head]) -> dict[str, float]:
    out: dict[str, float] = {}
    if sums.get("loss_n"):
        out[f"{prefix}loss"] = sums["loss"] / sums["loss_n"]
    for name, head in heads.items():
        out.update({prefix + key: value for key, value in head.metrics(name, sums).items()})
    return out
