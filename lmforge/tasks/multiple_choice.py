"""Multiple choice on SWAG CSV files (BERT §4.4): each (context, ending) pair is scored with one number
and a softmax runs over the four endings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmforge.tasks import metrics as M
from lmforge.tasks.base import Encoded, Task, mark_padding, split_path
from lmforge.tasks.io import DataError, read_records, read_rows
from lmforge.tasks.text import encode_texts

ENDINGS = ("ending0", "ending1", "ending2", "ending3")


@dataclass
class ChoiceExample:
    context: str  # sent1
    start: str  # sent2: the start of the ending, shared by all choices
    endings: list[str]
    label: int | None
    line: int
    source: str


class SwagTask(Task):
    name = "swag"
    head_kind = "multiple_choice"
    main_metric = "accuracy"
    task_type = "multiple_choice"
    files = {"train": "train.csv", "dev": "val.csv", "test": "test.csv"}

    def path_of(self, data: Path, split: str) -> Path:
        return split_path(data, split, self.files, self.options)

    def read(self, data: Path, split: str) -> list[ChoiceExample]:
        path = self.path_of(Path(data), split)
        header = next(read_rows(path, "csv"), None)
        has_label = header is not None and "label" in [h.strip() for h in header.values]
        if split in ("train", "dev") and not has_label:
            raise DataError(path, 1, "no 'label' column (this split needs labels)")
        columns = ["sent1", "sent2", *ENDINGS] + (["label"] if has_label else [])
        examples = []
        for line, record in read_records(path, columns, "csv"):
            label = None
            if has_label:
                raw = record["label"].strip()
                if raw not in ("0", "1", "2", "3"):
                    raise DataError(path, line, f"bad label {raw!r}; expected 0, 1, 2 or 3")
                label = int(raw)
            examples.append(ChoiceExample(record["sent1"], record["sent2"], [record[e] for e in ENDINGS],
                                          label, line, str(path)))
        return examples

    def is_labelled(self, example: ChoiceExample) -> bool:
        return example.label is not None

    def head_spec(self, label_names: list[str] | None) -> dict[str, Any]:
        return {"kind": self.head_kind}

    def encode(self, examples: list[ChoiceExample], tokenizer: Tokenizer, max_length: int,
               label_names: list[str] | None, train: bool) -> Encoded:
        first = [e.context for e in examples for _ in ENDINGS]
        second = [f"{e.start} {ending}".strip() for e in examples for ending in e.endings]
        encodings = encode_texts(tokenizer, first, second, max_length)
        choices = len(ENDINGS)
        features = []
        for i, example in enumerate(examples):
            group = encodings[i * choices:(i + 1) * choices]
            feature: dict[str, Any] = {"input_ids": [g.ids for g in group],  # C lists of token ids
                                       "token_type_ids": [g.type_ids for g in group], "example_index": i}
            if example.label is not None:
                feature["labels"] = example.label
            features.append(feature)
        return Encoded(mark_padding(features, tokenizer))

    def decode(self, examples: list[ChoiceExample], encoded: Encoded, logits: list[np.ndarray],
               label_names: list[str] | None) -> list[int]:
        return [int(np.argmax(row)) for row in logits]

    def metrics(self, examples: list[ChoiceExample], predictions: list[int]) -> dict[str, float]:
        return M.accuracy([e.label for e in examples], predictions)

    def prediction_record(self, example: ChoiceExample, prediction: int) -> dict[str, Any]:
        record: dict[str, Any] = {"context": example.context, "start": example.start,
                                  "endings": example.endings, "prediction": prediction}
        if example.label is not None:
            record["label"] = example.label
        return record
