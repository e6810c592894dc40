"""Which model a fine-tuning run keeps: the best dev evaluation (or the final model), early stopping's
count, and the sentence the summary uses to say what the reported dev score means."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmforge.models import TaskModel
from lmforge.weights import load_weights, save_weights

BEST_FILE = "best.safetensors"  # in a checkpoint: the best dev model so far


@dataclass
class Best:
    """The best dev evaluation so far, and (with selection) a CPU copy of that model's weights; saved
    in every checkpoint, so a resumed run still returns the best model of the whole run."""

    score: float | None = None
    step: int | None = None
    metrics: dict[str, float] | None = None
    state: dict[str, torch.Tensor] | None = None
    last_step: int | None = None  # the latest evaluation (the final model's scores when it is the last step)
    last_scores: dict[str, float] = field(default_factory=dict)

    since: int = 0  # evaluations since the best one (early stopping's count)

    def update(self, step: int, scores: dict[str, float], metric: str, model: TaskModel | None) -> None:
        self.last_step, self.last_scores = step, scores
        if self.score is not None and scores[metric] <= self.score:
            self.since += 1
            return
        self.score, self.step, self.metrics, self.since = scores[metric], step, scores, 0
        if model is not None:
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "step": self.step, "metrics": self.metrics, "last_step": self.last_step,
                "last_scores": self.last_scores, "since": self.since}

    def write(self, directory: Path) -> None:
        if self.state is not None:
            save_weights({k: v.contiguous() for k, v in self.state.items()}, directory / BEST_FILE)

    @classmethod
    def restore(cls, saved: dict[str, Any], directory: Path | None) -> Best:
        best = cls(saved.get("score"), saved.get("step"), saved.get("metrics"), None, saved.get("last_step"),
                   saved.get("last_scores") or {}, saved.get("since", 0))
        if directory is not None and (directory / BEST_FILE).is_file():
            best.state = load_weights(directory / BEST_FILE)
        return best


def selection_note(selected: bool, evaluations: int, metric: str, best_step: int | None, step: int,
                   total_steps: int | None = None) -> str:
    """What the reported dev score means: picked on dev (optimistic), or the final model's."""
    if total_steps is not None and step < total_steps:
        return (f"stopped early at step {step} of {total_steps} (--patience: no better {metric} in the last "
                "evaluations); " + selection_note(selected, evaluations, metric, best_step, step))
    if selected:
        return (f"the model of step {best_step} was kept: the best {metric} of {evaluations} dev evaluations; "
                "dev was used for selection, so its score is optimistic (score a separate split for a "
                "clean estimate)")
    if evaluations:
        return f"the final model (step {step}) was kept; dev was not used for selection"
    return f"the final model (step {step}) was kept; no dev examples were scored"
