"""Inputs a backbone reads besides token ids, added to every fine-tuning batch (train, dev, evaluate,
predict) without the shared loop or the tasks knowing which backbone it is.

A backbone that needs more than ids (ELMo: each token's characters, Peters et al. 2018 §3.4) names
them in `input_names` and makes them with `inputs_for_tokenizer(tokenizer)`, the same hook `lmforge
embed` calls; `task_for` wraps the task so that its `collate` adds them. Tokens the vocabulary lost
to its unknown id are spelt from the text the task kept for them (`unknown_texts` of a feature).
`feature_based` decides whether the backbone trains or stays frozen under the task head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class WithBackboneInputs:
    """A task whose batches also carry the backbone's extra inputs; everything else is the task's."""

    def __init__(self, task: Any, make: Callable[..., dict[str, torch.Tensor]], names: tuple[str, ...]) -> None:
        self.task, self.make, self.names = task, make, names

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def collate(self, features: list[dict[str, Any]], pad: int) -> dict[str, torch.Tensor]:
        batch = self.task.collate(features, pad)
        if batch["input_ids"].dim() != 2:
            raise ValueError(f"task {self.task.name!r}: a backbone reading {', '.join(self.names)} takes one "
                             "sequence per example (classification, tagging, QA), not several choices")
        texts = [feature.get("unknown_texts") for feature in features]
        return {**batch, **self.make(batch["input_ids"], batch["attention_mask"], texts)}


TASK_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what every task's collate makes


def task_for(model: Any, tokenizer: Any, task: Any) -> Any:
    """`task` itself when the backbone reads only what tasks collate (ELMo's word-encoder baseline
    too), else wrapped to add the rest."""
    make = getattr(model.backbone, "inputs_for_tokenizer", None)
    if make is None or set(model.backbone.input_names) <= set(TASK_INPUTS):
        return task
    return WithBackboneInputs(task, make(tokenizer), model.backbone.input_names)


def feature_based(model: Any, update_backbone: bool | None) -> bool:
    """Freeze the backbone unless asked to update it; None is the model's own choice (ELMo's config:
    frozen, Peters et al. 2018 §3.3; Transformers: updated, BERT §4). Returns whether it froze."""
    update = not getattr(model.config, "freeze_for_tasks", False) if update_backbone is None else update_backbone
    if not update:
        model.freeze_backbone()
    return not update
