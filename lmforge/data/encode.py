"""The tokenizer file and the per-chunk encoder that runs in the worker processes.

Word starts come from the tokenizer's own word segmentation (`Encoding.word_ids`, which every
pre-tokenizer fills: BERT's whitespace+punctuation split, byte-level BPE's regex split, Metaspace
for Unigram), so whole-word masking never depends on a '##' or 'Ġ' spelling convention. A
tokenizer without a pre-tokenizer reports one word per sequence; then whitespace in the source
(from the offsets) marks the starts instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from lmforge.tokenizers import SpecialTokens, load_tokenizer, special_tokens  # noqa: F401 (re-exported)


def tokenizer_file(directory: str | Path) -> Path:
    path = Path(directory)
    path = path if path.is_file() else path / "tokenizer.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no tokenizer.json (train one with `lmforge tokenizer` first)")
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class EncodedChunk:
    """Tokens of a run of sentences, concatenated; `lengths[i]` tokens belong to sentence i."""

    ids: np.ndarray  # (N,) int64
    word_start: np.ndarray  # (N,) bool
    lengths: np.ndarray  # (S,) int64
    new_doc: np.ndarray  # (S,) bool: sentence i starts a document


_WORKER: dict = {}


def init_worker(tokenizer_path: str) -> None:
    """Pool initializer: each process loads the tokenizer once."""
    tok = load_tokenizer(tokenizer_path)
    tok.no_padding()  # a tokenizer.json saved for inference may pad/truncate to a fixed length
    tok.no_truncation()
    _WORKER["tok"] = tok
    _WORKER["segmented"] = tok.pre_tokenizer is not None


def encode_chunk(records: list[tuple[bool, str]]) -> EncodedChunk:
    tok: Tokenizer = _WORKER["tok"]
    texts = [text for _, text in records]
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    ids: list[int] = []
    words: list[int | None] = []
    offset_starts: list[bool] = []
    lengths = np.fromiter((len(enc) for enc in encodings), dtype=np.int64, count=len(encodings))
    segmented = _WORKER["segmented"]
    for enc, text in zip(encodings, texts):
        ids.extend(enc.ids)
        if segmented:
            words.extend(enc.word_ids)
        elif len(enc):
            offset_starts.extend(_starts_from_offsets(enc.offsets, text))
    if segmented:
        try:
            w = np.asarray(words, dtype=np.int64)
        except TypeError:  # a None word id (no word): treat every such token as its own word
            w = np.asarray([-1 if x is None else x for x in words], dtype=np.int64)
        word_start = np.ones(len(w), dtype=bool)
        word_start[1:] = (w[1:] != w[:-1]) | (w[1:] < 0)
        firsts = np.cumsum(lengths)[:-1]
        word_start[firsts[firsts < len(w)]] = True  # every sentence starts a word
    else:
        word_start = np.asarray(offset_starts, dtype=bool)
    return EncodedChunk(
        ids=np.asarray(ids, dtype=np.int64),
        word_start=word_start,
        lengths=lengths,
        new_doc=np.fromiter((flag for flag, _ in records), dtype=bool, count=len(records)),
    )


def _starts_from_offsets(offsets: list[tuple[int, int]], text: str) -> list[bool]:
    """A token starts a word if whitespace precedes it or begins it (SentencePiece's '▁' form)."""
    out = []
    prev_end = 0
    for k, (start, end) in enumerate(offsets):
        out.append(k == 0 or start > prev_end or text[start:start + 1].isspace() or text[start - 1:start].isspace())
        prev_end = max(prev_end, end)
    return out
