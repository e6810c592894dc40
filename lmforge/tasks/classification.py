"""Sentence and sentence-pair classification/regression: the nine GLUE tasks, NSMC, and user files.

BERT §4.1: the pair is packed as [CLS] A [SEP] B [SEP] and the head reads the pooled [CLS].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmforge.data.columnar import table_columns, table_kind
from lmforge.tasks import metrics as M
from lmforge.tasks.base import Encoded, Task, TaskOptions, mark_padding, split_path
from lmforge.tasks.io import DataError, has_column, read_records, read_rows, table_format
from lmforge.tasks.text import encode_texts, unknown_id, unknown_texts


@dataclass
class TextExample:
    text_a: str
    text_b: str | None
    label: str | float | None  # label name, a float for regression, None when unlabelled
    line: int
    source: str


@dataclass(frozen=True)
class Column:
    name: str  # header name
    index: int  # position when the file has no header (CoLA) or the header lacks the name


@dataclass(frozen=True)
class GlueSpec:
    files: dict[str, str]  # split -> file name in the task directory
    text_a: Column
    text_b: Column | None
    label: Column
    labels: tuple[str, ...] | None  # None: regression
    metric: Callable[[list, list], dict[str, float]]
    main_metric: str
    header: bool = True


def _f1_acc(gold: list, pred: list) -> dict[str, float]:
    return M.f1_accuracy(gold, pred, positive="1")


_TRAIN_DEV_TEST = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}

# Column layouts as GLUE's download_glue_data.py writes them (and as BERT's run_classifier.py reads them).
GLUE: dict[str, GlueSpec] = {
    "cola": GlueSpec(_TRAIN_DEV_TEST, Column("sentence", 3), None, Column("label", 1), ("0", "1"),
                     M.matthews, "matthews_corr", header=False),
    "sst2": GlueSpec(_TRAIN_DEV_TEST, Column("sentence", 0), None, Column("label", 1), ("0", "1"),
                     M.accuracy, "accuracy"),
    "mrpc": GlueSpec(_TRAIN_DEV_TEST, Column("#1 String", 3), Column("#2 String", 4), Column("Quality", 0),
                     ("0", "1"), _f1_acc, "f1"),
    "stsb": GlueSpec(_TRAIN_DEV_TEST, Column("sentence1", 7), Column("sentence2", 8), Column("score", 9),
                     None, M.pearson_spearman, "pearson"),
    "qqp": GlueSpec(_TRAIN_DEV_TEST, Column("question1", 3), Column("question2", 4), Column("is_duplicate", 5),
                    ("0", "1"), _f1_acc, "f1"),
    "mnli": GlueSpec({"train": "train.tsv", "dev": "dev_matched.tsv", "dev_matched": "dev_matched.tsv",
                      "dev_mismatched": "dev_mismatched.tsv", "test": "test_matched.tsv",
                      "test_matched": "test_matched.tsv", "test_mismatched": "test_mismatched.tsv"},
                     Column("sentence1", 8), Column("sentence2", 9), Column("gold_label", -1),
                     ("contradiction", "entailment", "neutral"), M.accuracy, "accuracy"),
    "qnli": GlueSpec(_TRAIN_DEV_TEST, Column("question", 1), Column("sentence", 2), Column("label", 3),
                     ("entailment", "not_entailment"), M.accuracy, "accuracy"),
    "rte": GlueSpec(_TRAIN_DEV_TEST, Column("sentence1", 1), Column("sentence2", 2), Column("label", 3),
                    ("entailment", "not_entailment"), M.accuracy, "accuracy"),
    "wnli": GlueSpec(_TRAIN_DEV_TEST, Column("sentence1", 1), Column("sentence2", 2), Column("label", 3),
                     ("0", "1"), M.accuracy, "accuracy"),
}
# GLUE as HF `datasets` exports it (Parquet/Arrow, e.g. nyu-mll/glue): the text columns, and the GLUE label
# of each integer class in the export's ClassLabel order (None: STS-B's float score); -1 marks unlabelled rows.
_BINARY = ("0", "1")
HF_GLUE: dict[str, tuple[str, str | None, tuple[str, ...] | None]] = {
    "cola": ("sentence", None, _BINARY), "sst2": ("sentence", None, _BINARY),
    "mrpc": ("sentence1", "sentence2", _BINARY), "stsb": ("sentence1", "sentence2", None),
    "qqp": ("question1", "question2", _BINARY),
    "mnli": ("premise", "hypothesis", ("entailment", "neutral", "contradiction")),
    "qnli": ("question", "sentence", ("entailment", "not_entailment")),
    "rte": ("sentence1", "sentence2", ("entailment", "not_entailment")),
    "wnli": ("sentence1", "sentence2", _BINARY),
}
GLUE_DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
             "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


class ClassificationTask(Task):
    """Shared encoding, decoding and labels for every single-vector task."""

    head_kind = "classification"

    def __init__(self, options: TaskOptions | None = None) -> None:
        super().__init__(options)

    @property
    def regression(self) -> bool:
        return self.options.regression

    @property
    def pairs(self) -> bool:
        return self.options.text_pair_column is not None

    @property
    def task_type(self) -> str:  # type: ignore[override]
        if self.regression:
            return "regression"
        return "pair_classification" if self.pairs else "classification"

    def head_spec(self, label_names: list[str] | None) -> dict[str, Any]:
        if self.regression:
            return {"kind": self.head_kind, "num_labels": 1, "label_names": None}
        return {"kind": self.head_kind, "num_labels": len(label_names), "label_names": list(label_names)}

    def encode(self, examples: list[TextExample], tokenizer: Tokenizer, max_length: int,
               label_names: list[str] | None, train: bool) -> Encoded:
        pairs = any(e.text_b is not None for e in examples)
        encodings = encode_texts(tokenizer, [e.text_a for e in examples],
                                 [e.text_b or "" for e in examples] if pairs else None, max_length)
        index = {name: i for i, name in enumerate(label_names or [])}
        unk = unknown_id(tokenizer)
        features = []
        for i, (example, enc) in enumerate(zip(examples, encodings)):
            feature: dict[str, Any] = {"input_ids": enc.ids, "token_type_ids": enc.type_ids, "example_index": i}
            unknown = unknown_texts(enc, [example.text_a, example.text_b or ""], unk)
            if unknown:
                feature["unknown_texts"] = unknown
            if example.label is not None:
                if self.regression:
                    feature["labels"] = float(example.label)
                elif example.label in index:
                    feature["labels"] = index[example.label]
                else:
                    raise DataError(example.source, example.line,
                                    f"label {example.label!r} is not one the model knows ({label_names})")
            features.append(feature)
        return Encoded(mark_padding(features, tokenizer))

    def decode(self, examples: list[TextExample], encoded: Encoded, logits: list[np.ndarray],
               label_names: list[str] | None) -> list[Any]:
        if self.regression:
            return [float(row[0]) for row in logits]
        return [label_names[int(np.argmax(row))] for row in logits]

    def prediction_record(self, example: TextExample, prediction: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"text": example.text_a}
        if example.text_b is not None:
            record["text_pair"] = example.text_b
        record["prediction"] = prediction
        if example.label is not None:
            record["label"] = example.label
        return record

    def is_labelled(self, example: TextExample) -> bool:
        return example.label is not None

    def _check_labels(self, examples: list[TextExample], split: str) -> None:
        if split in ("train", "dev") and any(e.label is None for e in examples):
            first = next(e for e in examples if e.label is None)
            raise DataError(first.source, first.line, "no label (this split needs labels)")


class GlueTask(ClassificationTask):
    """A GLUE task read from its directory (train.tsv, dev.tsv, ...), columns as GLUE ships them; a
    Parquet/Arrow file (--data, --train-file, --dev-file) may be an HF `datasets` export instead."""

    def __init__(self, name: str, options: TaskOptions | None = None) -> None:
        super().__init__(options)
        self.name = name
        self.spec = GLUE[name]
        self.main_metric = self.spec.main_metric
        self.options.regression = self.spec.labels is None

    @property
    def pairs(self) -> bool:
        return self.spec.text_b is not None

    def label_names(self, train_examples: list[TextExample]) -> list[str] | None:
        return None if self.spec.labels is None else list(self.spec.labels)

    def path_of(self, data: Path, split: str) -> Path:
        return split_path(Path(data), split, self.spec.files, self.options)

    def read(self, data: Path, split: str) -> list[TextExample]:
        path = self.path_of(data, split)
        examples = list(self._read_table(path, split) if table_kind(path) else self._read_tsv(path, split))
        self._check_labels(examples, split)
        return examples

    def _gold(self, value: str | None, path: Path, line: int) -> str | float | None:
        """The checked label: a float score (STS-B) or one of the task's label names."""
        if value is None:
            return None
        if self.spec.labels is None:
            try:
                return float(value)
            except ValueError:
                raise DataError(path, line, f"score {value!r} is not a number") from None
        if value not in self.spec.labels:
            raise DataError(path, line, f"bad label {value!r}; expected one of {list(self.spec.labels)}")
        return value

    def _read_table(self, path: Path, split: str) -> Iterator[TextExample]:
        """A Parquet/Arrow file with the HF export's columns and integer labels, or with the TSV's
        column names and labels."""
        hf_a, hf_b, classes = HF_GLUE[self.name]
        names = table_columns(path)

        def column(*candidates: str) -> str | None:
            return next((c for c in candidates if c in names), None)

        wanted = [(hf_a, self.spec.text_a.name)] + ([(hf_b, self.spec.text_b.name)] if hf_b else [])
        texts = [column(*pair) for pair in wanted]
        if None in texts:
            pair = wanted[texts.index(None)]
            raise DataError(path, None, f"no column {pair[0]!r} (or {pair[1]!r}); it has {names}")
        label = column("label", self.spec.label.name)
        if label is None and split in ("train", "dev"):
            raise DataError(path, None, f"no column 'label' (or {self.spec.label.name!r}); it has {names}")
        for line, record in read_records(path, texts + ([label] if label else [])):
            raw = record.get(label)
            if raw == -1 or raw is None:
                raw = None
            elif classes is not None and isinstance(raw, int) and not isinstance(raw, bool):
                if not 0 <= raw < len(classes):
                    raise DataError(path, line, f"label {raw} is not a class of {self.name} (0..{len(classes) - 1})")
                raw = classes[raw]
            values = [record[c] for c in texts]
            bad = next((c for c, v in zip(texts, values) if not isinstance(v, str)), None)
            if bad is not None:
                raise DataError(path, line, f"column {bad!r} is not text: {record[bad]!r}")
            yield TextExample(values[0], values[1] if hf_b else None,
                              self._gold(None if raw is None else str(raw).strip(), path, line), line, str(path))

    def _read_tsv(self, path: Path, split: str) -> Iterator[TextExample]:
        spec = self.spec
        rows = read_rows(path, "tsv")
        first = next(rows, None)
        if first is None:
            raise DataError(path, None, "empty file")
        names = [v.strip() for v in first.values]
        has_header = spec.header and spec.text_a.name in names
        width = len(names) if has_header else None

        def position(col: Column | None, required: bool) -> int | None:
            if col is None:
                return None
            if has_header:
                if col.name in names:
                    return names.index(col.name)
                if required:
                    raise DataError(path, first.line, f"header has no column {col.name!r}; it has {names}")
                return None
            return col.index

        a = position(spec.text_a, True)
        b = position(spec.text_b, True)
        label = position(spec.label, split in ("train", "dev"))
        if has_header and names[-1] == spec.label.name:
            label = len(names) - 1  # MNLI's gold_label is the last column whatever the file's width
        for row in ([] if has_header else [first]) + list(rows):
            if width is None:
                width = len(row.values)  # headerless: the first row fixes the width
            if len(row.values) != width:
                raise DataError(path, row.line, f"expected {width} columns, found {len(row.values)}")
            needed = max(i if i >= 0 else width + i for i in (a, b, label) if i is not None)
            if needed >= len(row.values):
                raise DataError(path, row.line, f"expected at least {needed + 1} columns, found {len(row.values)}")
            value = self._gold(row.values[label].strip() if label is not None else None, path, row.line)
            yield TextExample(row.values[a], row.values[b] if b is not None else None, value, row.line, str(path))

    def metrics(self, examples: list[TextExample], predictions: list[Any]) -> dict[str, float]:
        return self.spec.metric([e.label for e in examples], predictions)


class TextClassificationTask(ClassificationTask):
    """The user's own TSV/CSV/JSONL/Parquet/Arrow: one or two named text columns and a label column.

    Labels are discovered from the training file and stored in the head spec with the model.
    """

    name = "classification"
    split_files = {"train": ("train",), "dev": ("dev", "validation", "valid"), "test": ("test",)}

    def __init__(self, options: TaskOptions | None = None, name: str = "classification",
                 files: dict[str, str] | None = None) -> None:
        super().__init__(options)
        self.name = name
        self.files = files
        self.main_metric = "pearson" if self.regression else "accuracy"

    def path_of(self, data: Path, split: str) -> Path:
        files = self.files or {split: tuple(f"{stem}{suffix}" for stem in stems
                                            for suffix in (".tsv", ".csv", ".jsonl", ".txt", ".json", ".parquet", ".arrow"))
                               for split, stems in self.split_files.items()}
        return split_path(data, split, files, self.options)

    def read(self, data: Path, split: str) -> list[TextExample]:
        path = self.path_of(Path(data), split)
        opts = self.options
        fmt = opts.format or table_format(path)
        text_cols = [opts.text_column] + ([opts.text_pair_column] if opts.text_pair_column else [])
        want_label = split in ("train", "dev")
        columns = text_cols + [opts.label_column]
        if not want_label and not has_column(path, opts.label_column, fmt):
            columns = text_cols
        examples = []
        for line, record in read_records(path, columns, fmt):
            texts = []
            for col in text_cols:
                value = record[col]
                if not isinstance(value, str):
                    raise DataError(path, line, f"column {col!r} is not text: {value!r}")
                texts.append(value)
            label: str | float | None = None
            if opts.label_column in record:
                raw = record[opts.label_column]
                if self.regression:
                    try:
                        label = float(raw)
                    except (TypeError, ValueError):
                        raise DataError(path, line, f"label {raw!r} is not a number") from None
                else:
                    label = "" if raw is None else str(raw).strip()  # a JSON/Parquet null is no label
                    if not label:
                        raise DataError(path, line, f"empty label in column {opts.label_column!r}")
            examples.append(TextExample(texts[0], texts[1] if len(texts) > 1 else None, label, line, str(path)))
        self._check_labels(examples, split)
        return examples

    def label_names(self, train_examples: list[TextExample]) -> list[str] | None:
        if self.regression:
            return None
        names = sorted({str(e.label) for e in train_examples})
        if all(n.lstrip("-").isdigit() for n in names):
            names.sort(key=int)  # 0, 1, 2, ..., 10 rather than string order
        if len(names) < 2:
            raise ValueError(f"the training data has {len(names)} distinct label(s) {names}; need at least 2")
        return names

    def metrics(self, examples: list[TextExample], predictions: list[Any]) -> dict[str, float]:
        gold = [e.label for e in examples]
        if self.regression:
            return M.pearson_spearman(gold, predictions)
        result = M.accuracy(gold, predictions)
        names = sorted(set(gold) | set(predictions))
        if len(names) <= 2:
            result["f1"] = M.binary_f1(gold, predictions, names[-1])
        else:
            result["macro_f1"] = M.macro_f1(gold, predictions)
        return result


def nsmc_task(options: TaskOptions | None = None) -> TextClassificationTask:
    """NSMC ships `ratings_train.txt` / `ratings_test.txt` with columns id, document, label."""
    options = options or TaskOptions()
    options.text_column, options.text_pair_column, options.label_column = "document", None, "label"
    options.format = "tsv"
    return TextClassificationTask(options, name="nsmc",
                                  files={"train": "ratings_train.txt", "dev": "ratings_test.txt",
                                         "test": "ratings_test.txt"})
