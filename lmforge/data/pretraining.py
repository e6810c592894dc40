"""Pre-training examples built on the fly from the memory-mapped output of `lmforge prepare`.

`Corpus` reads one split: its shards, the global token offsets of every sentence and document,
and any token span (which may cross shards). `PretrainingDataset` hands the corpus to an objective
(`lmforge.objectives`): the objective's layout (packing, sentence pairs, blocks) is fixed when the
dataset is opened, so __len__ is constant, and each example is a pure function of (seed, epoch,
index): every random choice uses a generator seeded from those numbers, so any worker, rank or
resumed run sees the same example.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.data.prepare import MANIFEST
from lmforge.data.shards import Shard, open_split
from lmforge.objectives.base import LAYOUT, ExampleRandom, document_end
from lmforge.objectives.registry import ObjectiveConfig, make_objective
from lmforge.tokenizers import SpecialTokens

__all__ = ["Corpus", "ObjectiveConfig", "PretrainingDataset", "read_manifest"]


def read_manifest(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `lmforge prepare --out {prepared_dir}` first")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


class Corpus:
    """One split of a prepared corpus: sentence and document offsets, and token reads by span."""

    def __init__(self, prepared_dir: str | Path, split: str = "train") -> None:
        self.dir = Path(prepared_dir)
        self.split = split
        manifest = read_manifest(self.dir)
        if split not in manifest["splits"]:
            raise FileNotFoundError(
                f"{self.dir}: has no {split!r} split (has {sorted(manifest['splits'])}); "
                "use --valid-fraction or --valid with `lmforge prepare`"
            )
        self.manifest = manifest
        self.vocab_size: int = manifest["vocab_size"]
        self.special = SpecialTokens.from_dict(manifest["special_tokens"])
        self.document_end = document_end(self.special)
        # the ids a "random token" replacement is drawn from: the vocabulary minus special tokens
        self.ordinary_ids = np.setdiff1d(np.arange(self.vocab_size),
                                         np.asarray(sorted(self.special.ids()), dtype=np.int64))
        self._dtype = np.dtype(manifest["dtype"])
        self._shard_info = manifest["splits"][split]["shards"]
        self._shards: list[Shard] | None = None
        self._index()

    @property
    def shards(self) -> list[Shard]:
        if self._shards is None:  # opened lazily: cheap to pickle into DataLoader workers
            self._shards = open_split(self.dir / self.split, self._dtype, self._shard_info)
        return self._shards

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = None
        return state

    def _index(self) -> None:
        """Global token offsets of every sentence (sent_lo, sent_hi, sent_doc: (S,)) and the first
        sentence of every document (doc_first: (D + 1,), ending with S)."""
        bases = np.cumsum([0] + [info["tokens"] for info in self._shard_info])
        self._bases = bases
        sent_lo, sent_hi, sent_doc, doc_first = [], [], [], []
        n_docs = 0
        for k, shard in enumerate(self.shards):
            offs = np.asarray(shard.sentences) + bases[k]
            sent_lo.append(offs[:-1])
            sent_hi.append(offs[1:])
            docs = np.asarray(shard.documents)
            per_doc = np.diff(docs)
            sent_doc.append(np.repeat(np.arange(n_docs, n_docs + len(per_doc)), per_doc))
            doc_first.append(docs[:-1] + sum(len(x) for x in sent_lo[:-1]))
            n_docs += len(per_doc)
        self.sent_lo = np.concatenate(sent_lo) if sent_lo else np.zeros(0, np.int64)
        self.sent_hi = np.concatenate(sent_hi) if sent_hi else np.zeros(0, np.int64)
        self.sent_doc = np.concatenate(sent_doc) if sent_doc else np.zeros(0, np.int64)
        self.doc_first = np.concatenate(doc_first + [np.asarray([len(self.sent_lo)])]).astype(np.int64)

    def document_spans(self) -> tuple[np.ndarray, np.ndarray]:
        """(D,) global start and end token of every document."""
        return self.sent_lo[self.doc_first[:-1]], self.sent_hi[self.doc_first[1:] - 1]

    def document_sentences(self) -> list[np.ndarray]:
        """Per document, (S_d + 1,) global token offsets of its sentences (they are contiguous)."""
        first = self.doc_first
        return [np.append(self.sent_lo[a:b], self.sent_hi[b - 1]) for a, b in zip(first[:-1], first[1:])]

    def read(self, lo: int, hi: int, bits: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens (and word-start bits) of global span [lo, hi), which may cross shards."""
        k = int(np.searchsorted(self._bases, lo, side="right")) - 1
        ids, ws = [], []
        while lo < hi:
            shard = self.shards[k]
            a, b = lo - self._bases[k], min(hi, self._bases[k + 1]) - self._bases[k]
            ids.append(np.asarray(shard.tokens[a:b], dtype=np.int64))
            if bits:
                ws.append(shard.word_start(int(a), int(b)))
            lo = self._bases[k] + b
            k += 1
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        return np.concatenate(ids), (np.concatenate(ws) if bits else None)


class PretrainingDataset(torch.utils.data.Dataset):
    """Examples for one objective over one split of a prepared corpus."""

    def __init__(self, prepared_dir, objective: ObjectiveConfig, seed: int = 0, split: str = "train") -> None:
        self.corpus = Corpus(prepared_dir, split)
        self.objective = make_objective(objective)
        self.seed = seed
        self.split = split
        self.epoch = 0
        self.manifest = self.corpus.manifest
        self.vocab_size = self.corpus.vocab_size
        self.special = self.corpus.special
        try:
            self.objective.check_data(self.special)
        except ValueError as err:
            raise ValueError(f"{self.corpus.dir / MANIFEST}: {err}") from None
        self.layout = self.objective.layout(self.corpus, np.random.default_rng([seed, LAYOUT]))
        self._len = len(self.layout)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} examples")
        return self.objective.example(self.corpus, self.layout, index, ExampleRandom(self.seed, self.epoch, index))

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.objective.collate(examples, self.special)
