"""Token tagging (NER) on CoNLL-style column files, BERT §5.3.

CoNLL-2003 ships IOB1 tags (`I-PER` starts an entity; `B-` only separates two adjacent entities of
one type); seqeval's entity F1 expects IOB2, so tags are converted on reading. Each word is labelled
on its first sub-token; the other sub-tokens get -100 and are ignored by the loss. With a word-level
tokenizer (ELMo's units, Peters et al. 2018 §3.4) every word is one token, labelled itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from lmforge.heads import IGNORE
from lmforge.tasks.base import Encoded, Task, mark_padding, split_path, unpad
from lmforge.tasks.io import DataError
from lmforge.tasks.metrics import seqeval_scores
from lmforge.tasks.text import unknown_id, unknown_texts

TAG = re.compile(r"^(O|[BIES]-\S+)$")


@dataclass
class Sentence:
    words: list[str]
    tags: list[str] | None  # IOB2
    line: int  # line of the first word
    source: str


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """I-X starts an entity when the previous tag is O or of another type; it becomes B-X there.
    A valid IOB2 sequence is left unchanged."""
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def read_conll(path: str | Path, tag_column: int = -1, scheme: str = "auto",
               need_tags: bool = True) -> list[Sentence]:
    """Sentences of a CoNLL column file: whitespace-separated columns, a blank line between sentences,
    `-DOCSTART-` lines between documents. Every token line must have the same number of columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if scheme not in ("auto", "iob1", "iob2"):
        raise ValueError(f"unknown tag scheme {scheme!r}; expected auto, iob1 or iob2")
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0
    width: int | None = None

    def flush() -> None:
        if words:
            seq = None
            if tags:
                seq = tags if scheme == "iob2" else iob1_to_iob2(tags)
            sentences.append(Sentence(list(words), seq, start, str(path)))
        words.clear()
        tags.clear()

    with path.open(encoding="utf-8-sig") as handle:
        for number, text in enumerate(handle, 1):
            cols = text.split()
            if not cols:
                flush()
                continue
            if cols[0] == "-DOCSTART-":
                flush()
                continue
            if width is None:
                width = len(cols)
            if len(cols) != width:
                raise DataError(path, number, f"expected {width} columns, found {len(cols)}")
            if not words:
                start = number
            words.append(cols[0])
            if width > 1:
                try:
                    tag = cols[tag_column]
                except IndexError:
                    raise DataError(path, number, f"no tag column {tag_column} in {len(cols)} columns") from None
                if not TAG.match(tag):
                    raise DataError(path, number, f"bad tag {tag!r}; expected O or B-/I-/E-/S-TYPE")
                tags.append(tag)
            elif need_tags:
                raise DataError(path, number, "no tag column (a single column holds only the word)")
    flush()
    if not sentences:
        raise DataError(path, None, "no sentences")
    return sentences


class TaggingTask(Task):
    name = "ner"
    head_kind = "token_classification"
    main_metric = "f1"
    task_type = "tagging"
    files = {"train": ("eng.train", "train.txt", "train.conll"),
             "dev": ("eng.testa", "dev.txt", "valid.txt", "dev.conll"),
             "test": ("eng.testb", "test.txt", "test.conll")}

    def path_of(self, data: Path, split: str) -> Path:
        return split_path(data, split, self.files, self.options)

    def read(self, data: Path, split: str) -> list[Sentence]:
        return read_conll(self.path_of(Path(data), split), self.options.tag_column, self.options.tag_scheme,
                          need_tags=split in ("train", "dev", "test"))

    def is_labelled(self, example: Sentence) -> bool:
        return example.tags is not None

    def label_names(self, train_examples: list[Sentence]) -> list[str]:
        found = {t for s in train_examples for t in (s.tags or [])}
        return ["O"] + sorted(found - {"O"}, key=lambda t: (t[2:], t[0]))

    def head_spec(self, label_names: list[str] | None) -> dict[str, Any]:
        return {"kind": self.head_kind, "num_labels": len(label_names), "label_names": list(label_names)}

    def encode(self, examples: list[Sentence], tokenizer: Tokenizer, max_length: int,
               label_names: list[str] | None, train: bool) -> Encoded:
        tokenizer.enable_truncation(max_length)
        try:
            encodings = tokenizer.encode_batch([s.words for s in examples], is_pretokenized=True)
        finally:
            tokenizer.no_truncation()
        index = {name: i for i, name in enumerate(label_names or [])}
        unk = unknown_id(tokenizer)
        features, truncated = [], 0
        for i, (sentence, enc) in enumerate(zip(examples, encodings)):
            first_token = [-1] * len(sentence.words)  # position of each word's first sub-token
            previous = None
            for pos, word in enumerate(enc.word_ids):
                if word is not None and word != previous:
                    first_token[word] = pos
                previous = word
            truncated += any(p < 0 for p in first_token)
            feature: dict[str, Any] = {"input_ids": enc.ids, "token_type_ids": enc.type_ids,
                                       "example_index": i, "word_starts": first_token}
            unknown = unknown_texts(enc, sentence.words, unk, by_word=True)
            if unknown:
                feature["unknown_texts"] = unknown
            if sentence.tags is not None and label_names is not None:
                labels = [IGNORE] * len(enc.ids)
                for word, pos in enumerate(first_token):
                    if pos < 0:
                        continue
                    tag = sentence.tags[word]
                    if tag not in index:
                        if train:
                            raise DataError(sentence.source, sentence.line + word,
                                            f"tag {tag!r} not among the labels {label_names}")
                        continue  # an unseen dev tag can never be predicted; scoring counts it as missed
                    labels[pos] = index[tag]
                feature["labels"] = labels
            features.append(feature)
        return Encoded(mark_padding(features, tokenizer), extra={"truncated_sentences": truncated})

    def trim_logits(self, feature: dict[str, Any], logits: Any) -> np.ndarray:
        return unpad(feature, logits).float().cpu().numpy()  # (T, L)

    def decode(self, examples: list[Sentence], encoded: Encoded, logits: list[np.ndarray],
               label_names: list[str] | None) -> list[list[str]]:
        """The tag of a word is the argmax at its first sub-token; words cut by truncation get O."""
        out = []
        for feature, scores in zip(encoded.features, logits):
            best = scores.argmax(-1)
            out.append([label_names[int(best[p])] if p >= 0 else "O" for p in feature["word_starts"]])
        return out

    def metrics(self, examples: list[Sentence], predictions: list[list[str]]) -> dict[str, float]:
        return seqeval_scores([s.tags for s in examples], [iob1_to_iob2(p) for p in predictions])

    def prediction_record(self, example: Sentence, prediction: list[str]) -> dict[str, Any]:
        record: dict[str, Any] = {"words": example.words, "prediction": prediction}
        if example.tags is not None:
            record["tags"] = example.tags
        return record
