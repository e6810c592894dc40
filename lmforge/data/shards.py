"""On-disk layout of a prepared corpus, its streaming writer and its memory-mapped reader.

<out>/<split>/shard_NNNNN.tokens.bin      token ids, raw np.uint16 (vocab < 65536) or np.uint32
<out>/<split>/shard_NNNNN.word_start.bin  one bit per token (np.packbits, big-endian bit order):
                                          1 = the token starts a word (for whole-word masking)
<out>/<split>/shard_NNNNN.sentences.npy   int64 (S+1,): sentence i = tokens [s[i], s[i+1])
<out>/<split>/shard_NNNNN.documents.npy   int64 (D+1,): document j = sentences [d[j], d[j+1])
Shards end at document boundaries, so a document never spans two shards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.uint32)


class _SplitWriter:
    """Appends documents to the current shard; opens a new one when it is full."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict] = []
        self.tokens = self.sentences = self.documents = 0
        self._open = False
        self._doc = None

    def _start_shard(self) -> None:
        stem = self.dir / f"shard_{len(self.shards):05d}"
        self._stem = stem
        self._tok_fh = open(f"{stem}.tokens.bin", "wb")
        self._bit_fh = open(f"{stem}.word_start.bin", "wb")
        self._bits = np.zeros(0, dtype=bool)  # leftover bits (< 8) not yet packed
        self._sent = [0]
        self._docs = [0]
        self._ntok = 0
        self._open = True

    def _finish_shard(self) -> None:
        if not self._open:
            return
        if len(self._bits):
            self._bit_fh.write(np.packbits(self._bits).tobytes())
        self._tok_fh.close()
        self._bit_fh.close()
        np.save(f"{self._stem}.sentences.npy", np.asarray(self._sent, dtype=np.int64))
        np.save(f"{self._stem}.documents.npy", np.asarray(self._docs, dtype=np.int64))
        self.shards.append(
            dict(name=self._stem.name, tokens=self._ntok, sentences=len(self._sent) - 1, documents=len(self._docs) - 1)
        )
        self._open = False

    def add(self, doc_id: int, ids: np.ndarray, word_start: np.ndarray, lengths: np.ndarray) -> None:
        """Sentences (all non-empty) of document `doc_id`, which may continue the previous call's."""
        if doc_id != self._doc:
            if self._open and self._doc is not None:
                self._docs.append(len(self._sent) - 1)
                self.documents += 1
            if self._open and self._ntok >= self.shard_tokens:
                self._finish_shard()
            if not self._open:
                self._start_shard()
            self._doc = doc_id
        self._tok_fh.write(ids.astype(self.dtype, copy=False).tobytes())
        bits = np.concatenate([self._bits, word_start])
        whole = len(bits) // 8 * 8
        self._bit_fh.write(np.packbits(bits[:whole]).tobytes())
        self._bits = bits[whole:]
        ends = self._ntok + np.cumsum(lengths)
        self._sent.extend(ends.tolist())
        self._ntok += int(lengths.sum())
        self.tokens += int(lengths.sum())
        self.sentences += len(lengths)

    def close(self) -> None:
        if self._open and self._doc is not None:
            self._docs.append(len(self._sent) - 1)
            self.documents += 1
        self._finish_shard()

    def summary(self) -> dict:
        return dict(tokens=self.tokens, sentences=self.sentences, documents=self.documents, shards=self.shards)


@dataclass
class Shard:
    """One shard opened read-only: memory maps, never loaded whole."""

    tokens: np.ndarray
    word_start_bits: np.ndarray
    sentences: np.ndarray
    documents: np.ndarray

    def word_start(self, start: int, end: int) -> np.ndarray:
        """Unpack the word-start bits of tokens [start, end)."""
        lo, hi = start // 8, (end + 7) // 8
        bits = np.unpackbits(self.word_start_bits[lo:hi])
        return bits[start - lo * 8 : end - lo * 8].astype(bool)


def open_split(directory: Path, dtype: np.dtype, shards: list[dict]) -> list[Shard]:
    opened = []
    for info in shards:
        stem = directory / info["name"]
        n = info["tokens"]
        tokens = np.memmap(f"{stem}.tokens.bin", dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
        nbytes = (n + 7) // 8
        bits = np.memmap(f"{stem}.word_start.bin", dtype=np.uint8, mode="r", shape=(nbytes,)) if n else np.zeros(0, np.uint8)
        sentences = np.load(f"{stem}.sentences.npy", allow_pickle=False)
        documents = np.load(f"{stem}.documents.npy", allow_pickle=False)
        if sentences[-1] != n or documents[-1] != len(sentences) - 1:
            raise ValueError(f"{stem}: index files do not match the token file (corrupt or partly written shard)")
        opened.append(Shard(tokens, bits, sentences, documents))
    return opened
