"""What every pre-training objective provides, and the pieces they share.

An objective owns its whole pipeline: which special tokens and model it needs, how the corpus is
cut into examples when the data opens (`layout`, so the dataset length is fixed), how one example
is built (`example`, a pure function of seed, epoch and index), how examples become a batch
(`collate`) and which model trains on it (`build_model`). The dataset and the trainer only call
these methods, so a new objective is one new file plus one line in `objectives/registry.py`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.objectives.masking import IGNORE

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens
    from lmforge.train.config import PretrainConfig

# Independent random streams. Examples are seeded with these numbers, so changing one changes
# every example drawn from it (and breaks resuming a run made before the change).
STATIC, DYNAMIC, LAYOUT, TRUNCATE = 1, 2, 3, 4


@dataclass(frozen=True)
class ExampleRandom:
    """Generators for one example: any worker, rank or resumed run draws the same numbers."""

    seed: int
    epoch: int
    index: int

    def fixed(self, stream: int) -> np.random.Generator:
        """The same draws in every epoch (BERT's static masks, truncation)."""
        return np.random.default_rng([self.seed, stream, self.index])

    def per_epoch(self, stream: int) -> np.random.Generator:
        """New draws each epoch (RoBERTa §4.1 dynamic masking)."""
        return np.random.default_rng([self.seed, stream, self.epoch, self.index])


@dataclass(frozen=True, kw_only=True)
class NoSettings:
    """For objectives with no settings beyond `kind` and `max_seq_len`."""


class Objective(Protocol):
    """One pre-training objective. Instances hold their validated settings (see `make_objective`)."""

    kind: ClassVar[str]
    Settings: ClassVar[type]  # its keys of the `objective:` config block, a frozen dataclass
    reads_pooler: ClassVar[bool]  # its heads read the pooled first token (else DDP looks for unused ones)
    max_seq_len: int

    def check_data(self, special: SpecialTokens) -> None:
        """Refuse a tokenizer that lacks the special tokens the examples need."""

    def check_model(self, model: ModelConfig) -> None:
        """Refuse a model that cannot train on these examples (causal vs encoder, segments, positions)."""

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> Any:
        """Examples fixed when the data opens (units, pairs, blocks); `len()` of it is the dataset size."""

    def example(self, corpus: Corpus, layout: Any, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        """One example: 1-D int arrays (input_ids first) and scalar labels."""

    def collate(self, examples: list[dict[str, Any]], special: SpecialTokens) -> dict[str, torch.Tensor]:
        """Pad to a batch; keys are the model's forward arguments."""

    def build_model(self, model: ModelConfig, run: PretrainConfig) -> tuple[nn.Module, dict[str, TaskModel]]:
        """The module the loop calls (`module(**batch).loss`) and the models saved from it, by sub-dir."""


@dataclass(frozen=True)
class BaseObjective:
    """Defaults for the protocol: one model (a backbone with `heads`) saved as the run's model, and
    batches padded to the longest example."""

    kind: ClassVar[str]
    Settings: ClassVar[type] = NoSettings
    reads_pooler: ClassVar[bool] = False
    heads: ClassVar[dict[str, dict[str, Any]]] = {}  # TaskModel head specs, by output name
    fill: ClassVar[dict[str, int]] = {"token_type_ids": 0}  # padding values; labels pad with IGNORE
    max_seq_len: int
    settings: Any = NoSettings()

    def collate(self, examples: list[dict[str, Any]], special: SpecialTokens) -> dict[str, torch.Tensor]:
        return pad_batch(examples, special, self.fill)

    def build_model(self, model: ModelConfig, run: PretrainConfig) -> tuple[nn.Module, dict[str, TaskModel]]:
        task_model = TaskModel(model, self.heads)
        return task_model, {"": task_model}


def settings_from(settings: type, config: Any) -> Any:
    """Build a Settings dataclass from the same-named fields of the flat `objective:` block."""
    return settings(**{f.name: getattr(config, f.name) for f in dataclasses.fields(settings)})


# ------------------------------------------------------------------------------------ checks
def require_special(kind: str, special: SpecialTokens, names: tuple[str, ...]) -> None:
    missing = [name for name in names if getattr(special, name) is None]
    if missing:
        raise ValueError(f"objective {kind!r} needs special tokens {missing} that the tokenizer lacks")


def require_positions(model: ModelConfig, max_seq_len: int) -> None:
    needed = max_seq_len + model.position_offset
    if needed > model.max_position_embeddings:
        raise ValueError(f"objective.max_seq_len {max_seq_len} needs {needed} positions; "
                         f"model has max_position_embeddings={model.max_position_embeddings}")


def require_encoder(kind: str, model: ModelConfig) -> None:
    if model.causal:
        raise ValueError(f"objective {kind} needs an encoder (BERT-like) model, got a causal one")


# ------------------------------------------------------------------------------------ batching
def document_end(special: SpecialTokens) -> int | None:
    """The token after each document: end-of-text (GPT-2), else [SEP] for a BERT-style tokenizer."""
    return special.eos if special.eos is not None else special.sep


def pad_id(special: SpecialTokens) -> int:
    if special.pad is not None:
        return special.pad
    return document_end(special) or 0


def pad_batch(examples: list[dict[str, Any]], special: SpecialTokens,
              fill: dict[str, int]) -> dict[str, torch.Tensor]:
    """Pad the 1-D entries to the longest `input_ids` (`fill[key]`, default IGNORE; padding id for
    input_ids) with attention 0 there; scalar entries become a (B,) tensor."""
    B, T = len(examples), max(len(ex["input_ids"]) for ex in examples)
    batch = {"input_ids": torch.full((B, T), pad_id(special), dtype=torch.long),
             "attention_mask": torch.zeros(B, T, dtype=torch.long)}
    sequences = [k for k, v in examples[0].items() if np.ndim(v) == 1 and k != "input_ids"]
    for key in sequences:
        batch[key] = torch.full((B, T), fill.get(key, IGNORE), dtype=torch.long)
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        batch["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
        batch["attention_mask"][i, :n] = 1
        for key in sequences:
            batch[key][i, :n] = torch.from_numpy(ex[key])
    for key in (k for k, v in examples[0].items() if np.ndim(v) == 0):
        batch[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.long)
    return batch
