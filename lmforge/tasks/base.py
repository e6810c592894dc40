"""What every task provides to the fine-tuning loop: read, encode, collate, decode, score.

A task turns benchmark files into examples, examples into token features (one example may give
several features: QA windows), and the model's per-feature logits back into one prediction per
example, which its metric scores against the gold answers.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from lmforge.heads import IGNORE
from lmforge.tasks.text import summary_last


@dataclass(kw_only=True)
class TaskOptions:
    """Task settings a user may change; stored in the run dir so evaluate/predict read data the same way."""

    # generic classification / regression
    text_column: str = "sentence"
    text_pair_column: str | None = None
    label_column: str = "label"
    regression: bool = False
    format: str | None = None  # tsv | csv | jsonl | parquet | arrow; None -> from the file suffix
    # token tagging (CoNLL)
    tag_column: int = -1
    tag_scheme: str = "auto"  # auto | iob1 | iob2
    # extractive QA (BERT §4.2 / Google's run_squad.py defaults)
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    null_score_threshold: float = 0.0
    version_2: bool | None = None  # None -> detected from the data (any `is_impossible`)
    train_articles: str | None = None  # slice of articles, e.g. "0:40"
    eval_articles: str | None = None  # e.g. "-8:"
    # text to text (T5, lmforge.text_to_text): the generic task's input and output columns
    source_column: str | None = None
    target_column: str | None = None
    # files: explicit paths override the task's split file names
    train_file: str | None = None
    dev_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Encoded:
    """Features ready for batching, and where each came from."""

    features: list[dict[str, Any]]
    skipped: int = 0  # examples that produced no feature (e.g. too long), reported in the summary
    extra: dict[str, Any] = field(default_factory=dict)


def split_path(data: Path, split: str, candidates: dict[str, str | tuple[str, ...]], options: TaskOptions) -> Path:
    """The file of a split: --train-file/--dev-file first; a file given as --data is used as it is;
    in a directory, the first of the split's candidate file names that exists."""
    if split == "train" and options.train_file:
        return Path(options.train_file)
    if split == "dev" and options.dev_file:
        return Path(options.dev_file)
    if data.is_file() or split == "predict":
        return data
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such file or directory")
    names = candidates.get(split, (split,))
    names = (names,) if isinstance(names, str) else names
    for name in names:
        if (data / name).is_file():
            return data / name
    raise FileNotFoundError(f"{data}: no {split} file (looked for {', '.join(names)})")


class Task(ABC):
    name: str
    head_kind: str
    main_metric: str
    task_type: str  # picks the fine-tuning defaults (lmforge.finetune_defaults.RECIPES)
    greater_is_better: bool = True

    def __init__(self, options: TaskOptions | None = None) -> None:
        self.options = options or TaskOptions()

    # --- data ---
    @abstractmethod
    def path_of(self, data: Path, split: str) -> Path:
        """The file `read(data, split)` reads."""

    @abstractmethod
    def read(self, data: Path, split: str) -> list[Any]:
        """Examples of `split` ('train', 'dev', 'test', or a task-specific name) from a file or directory."""

    def same_examples(self, data: Path, split_a: str, split_b: str) -> bool:
        """Whether two splits would read the same examples (one file given for both)."""
        try:
            return self.path_of(data, split_a).resolve() == self.path_of(data, split_b).resolve()
        except FileNotFoundError:
            return False

    def holdout_key(self, example: Any) -> Any:
        """Examples with one key go to the same side of a train/dev split of a single file; None: each
        example alone (QA keeps the questions of one paragraph together)."""
        return None

    def where(self, example: Any, data: Path) -> str:
        """The file and line an example was read from ("dev.tsv:12"), for messages; `data` when unknown."""
        line = getattr(example, "line", None)
        return f"{getattr(example, 'source', data)}" + (f":{line}" if line else "")

    @abstractmethod
    def is_labelled(self, example: Any) -> bool:
        """Whether the example carries the gold answer that `metrics` needs."""

    def label_names(self, train_examples: list[Any]) -> list[str] | None:
        """Labels the head predicts, discovered from train when the task does not fix them."""
        return None

    def head_spec(self, label_names: list[str] | None) -> dict[str, Any]:
        return {"kind": self.head_kind}

    @abstractmethod
    def encode(self, examples: list[Any], tokenizer: Tokenizer, max_length: int,
               label_names: list[str] | None, train: bool) -> Encoded:
        """Token features; `train` features carry labels (QA: positions inside the window)."""

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        return pad_batch(features, pad_id)

    # --- results ---
    @abstractmethod
    def decode(self, examples: list[Any], encoded: Encoded, logits: list[np.ndarray],
               label_names: list[str] | None) -> list[Any]:
        """One prediction per example from per-feature logits (in `encoded.features` order)."""

    @abstractmethod
    def metrics(self, examples: list[Any], predictions: list[Any]) -> dict[str, float]:
        """Scores against the gold labels of `examples`."""

    def prediction_record(self, example: Any, prediction: Any) -> dict[str, Any]:
        """One JSON line of `lmforge predict`."""
        return {"prediction": prediction}

    def read_inputs(self, path: Path) -> list[Any]:
        """Inputs for `lmforge predict` (labels optional); by default the same format as training data."""
        return self.read(path, "predict")

    def trim_logits(self, feature: dict[str, Any], logits: torch.Tensor) -> np.ndarray:
        """Drop padding from one feature's logits before keeping them on the CPU (per-token tasks use
        `unpad`; a sequence-level row has none)."""
        return logits.float().cpu().numpy()


def split_holdout(task: Task, examples: list[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """A seeded train/dev split of one file's examples: whole groups (`task.holdout_key`) are drawn in a
    shuffled order until `fraction` of the examples are held out; both sides keep the file's order."""
    if not 0 < fraction < 1:
        raise ValueError(f"dev fraction {fraction} must be between 0 and 1")
    groups: dict[Any, list[int]] = {}
    for i, example in enumerate(examples):
        key = task.holdout_key(example)
        groups.setdefault(i if key is None else key, []).append(i)
    order = list(groups)
    random.Random(seed).shuffle(order)
    want = max(1, round(fraction * len(examples)))
    held: set[int] = set()
    for key in order:
        if len(held) >= want:
            break
        held.update(groups[key])
    if len(held) == len(examples):
        raise ValueError(f"{len(examples)} example(s) are too few to hold out a dev set; give a dev file")
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def mark_padding(features: list[dict[str, Any]], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """Features of a tokenizer whose summary token comes last (XLNet's <cls>) are padded on the left, so
    that token sits at the same position in every row (the XLNet reference pads before the text); the
    others keep right padding and get no key."""
    if summary_last(tokenizer):
        for feature in features:
            feature["padding_side"] = "left"
    return features


def left_padded(feature: dict[str, Any]) -> bool:
    return feature.get("padding_side") == "left"


def summary_index(feature: dict[str, Any]) -> int:
    """Position of the sequence-summary token in the feature's own tokens: [CLS] first, or XLNet's <cls>
    last (left-padded features). QA's "no answer" points there."""
    return len(feature["input_ids"]) - 1 if left_padded(feature) else 0


def unpad(feature: dict[str, Any], rows: Any) -> Any:
    """The rows of a padded batch row (T, ...) that belong to the feature's own tokens."""
    n = len(feature["input_ids"])
    return rows[rows.shape[0] - n:] if left_padded(feature) else rows[:n]


def feature_length(feature: dict[str, Any]) -> int:
    ids = feature["input_ids"]
    if ids and isinstance(ids[0], list):
        return max(len(x) for x in ids)  # multiple choice: the longest choice
    return len(ids)


def pad_batch(features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Dynamic padding: pad to the longest feature of this batch, not to max_length.

    Scalar labels become (B,) tensors; per-token labels are padded with IGNORE (-100).
    Multiple-choice features hold C sequences each and give (B, C, T) inputs.
    Left-padded features (`mark_padding`) get the padding first and their QA positions shifted with it.
    """
    longest = max(feature_length(f) for f in features)
    batch: dict[str, torch.Tensor] = {}
    multi = isinstance(features[0]["input_ids"][0], list)
    left = left_padded(features[0])

    def pad(seq: list[int], value: int) -> list[int]:
        fill = [value] * (longest - len(seq))
        return fill + seq if left else seq + fill

    if multi:
        batch["input_ids"] = torch.tensor([[pad(s, pad_id) for s in f["input_ids"]] for f in features])
        batch["attention_mask"] = torch.tensor([[pad([1] * len(s), 0) for s in f["input_ids"]] for f in features])
        batch["token_type_ids"] = torch.tensor([[pad(s, 0) for s in f["token_type_ids"]] for f in features])
    else:
        batch["input_ids"] = torch.tensor([pad(f["input_ids"], pad_id) for f in features])  # (B, T)
        batch["attention_mask"] = torch.tensor([pad([1] * len(f["input_ids"]), 0) for f in features])
        batch["token_type_ids"] = torch.tensor([pad(f["token_type_ids"], 0) for f in features])
    for key in ("labels", "start_positions", "end_positions"):
        if key not in features[0]:
            continue
        values = [f[key] for f in features]
        if left and key != "labels":  # QA positions index the feature's tokens: move them past the padding
            values = [v + longest - len(f["input_ids"]) for v, f in zip(values, features)]
        if isinstance(values[0], list):
            batch[key] = torch.tensor([pad(v, IGNORE) for v in values])  # (B, T)
        else:
            dtype = torch.float32 if isinstance(values[0], float) else torch.long
            batch[key] = torch.tensor(values, dtype=dtype)
    return batch
