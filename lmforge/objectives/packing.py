"""Packing token streams into fixed-length examples.

FULL-SENTENCES (RoBERTa §4.2): inputs are full sentences sampled contiguously from one or more
documents, up to the length limit; crossing a document boundary adds an extra separator token.
A sentence longer than the limit is cut into limit-sized pieces (it could never fit whole).

CLM blocks (GPT-2 §2.2 practice; the WebText/OpenAI recipe): documents are concatenated with the
end-of-text token after each one and the stream is cut into max_seq_len blocks.
"""

from __future__ import annotations

import numpy as np


def full_sentence_units(sent_bounds: np.ndarray, sent_doc: np.ndarray, budget: int):
    """Split sentences longer than `budget` into pieces. sent_bounds (S, 2) global token spans,
    sent_doc (S,) document number. Returns (starts, ends, docs) of the units."""
    starts, ends, docs = [], [], []
    lengths = sent_bounds[:, 1] - sent_bounds[:, 0]
    long = lengths > budget
    if not long.any():
        return sent_bounds[:, 0].copy(), sent_bounds[:, 1].copy(), sent_doc.copy()
    for (lo, hi), doc, is_long in zip(sent_bounds.tolist(), sent_doc.tolist(), long.tolist()):
        if not is_long:
            starts.append(lo), ends.append(hi), docs.append(doc)
            continue
        for s in range(lo, hi, budget):
            starts.append(s), ends.append(min(s + budget, hi)), docs.append(doc)
    return np.asarray(starts, np.int64), np.asarray(ends, np.int64), np.asarray(docs, np.int64)


def pack_full_sentences(unit_len: np.ndarray, unit_doc: np.ndarray, budget: int) -> np.ndarray:
    """Greedy packing of consecutive units into examples of at most `budget` tokens, counting one
    separator at each document change inside an example. Returns (E + 1,) unit offsets."""
    offsets = [0]
    used = 0
    for u, (n, doc) in enumerate(zip(unit_len.tolist(), unit_doc.tolist())):
        extra = 1 if used and doc != unit_doc[u - 1] else 0
        if used and used + extra + n > budget:
            offsets.append(u)
            used, extra = 0, 0
        used += extra + n
    offsets.append(len(unit_len))
    return np.asarray(offsets, dtype=np.int64)


def clm_block_count(doc_len: np.ndarray, block: int) -> int:
    """Blocks over the stream doc0 <eos> doc1 <eos> ...; the last partial block is kept (padded)."""
    total = int(doc_len.sum() + len(doc_len))
    return (total + block - 1) // block
