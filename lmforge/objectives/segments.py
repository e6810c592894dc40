"""Sentence-pair instances for NSP (BERT §3.1 "Task #2") and SOP (ALBERT §4.2).

Follows google-research/bert `create_instances_from_document`: sentences of a document are
gathered into a chunk until it reaches a target length (max_seq_len - 3 for [CLS] A [SEP] B [SEP];
with short_seq_prob a random shorter target in [2, max]), A is the first 1..n-1 sentences of the
chunk, and B is the rest (actual next) or, for NSP with probability next_sentence_prob or when the
chunk has one sentence, a run of sentences from a random other document; then the unused
sentences of the chunk are "put back" so they are not wasted. SOP (ALBERT §4.2) always takes B
from the same document and swaps A and B with probability 0.5.

Documents are given as token spans of their sentences; instances are spans, so they are cheap to
keep for a whole corpus and the tokens are read (memory-mapped) only when an example is built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PairInstances:
    """Column arrays, one row per instance. Spans are global token offsets [start, end)."""

    a_start: np.ndarray
    a_end: np.ndarray
    b_start: np.ndarray
    b_end: np.ndarray
    label: np.ndarray  # 0 = actual next / in order, 1 = random / swapped

    def __len__(self) -> int:
        return len(self.label)


def build_pairs(
    doc_sentences: list[np.ndarray],
    max_seq_len: int,
    rng: np.random.Generator,
    kind: str = "nsp",
    short_seq_prob: float = 0.1,
    next_sentence_prob: float = 0.5,
) -> PairInstances:
    """doc_sentences[d]: (S_d + 1,) global token offsets of document d's sentences (contiguous).
    For "sop" the B segment is the actual continuation and the pair is swapped with p = 0.5."""
    if kind not in ("nsp", "sop"):
        raise ValueError(f"pair kind must be nsp or sop, not {kind!r}")
    max_num_tokens = max_seq_len - 3  # [CLS] A [SEP] B [SEP]
    if max_num_tokens < 2:
        raise ValueError(f"max_seq_len {max_seq_len} leaves no room for a sentence pair")
    rows: list[tuple[int, int, int, int, int]] = []
    n_docs = len(doc_sentences)
    for d, bounds in enumerate(doc_sentences):
        lengths = np.diff(bounds)
        target = max_num_tokens
        if rng.random() < short_seq_prob:
            target = int(rng.integers(2, max_num_tokens + 1))
        chunk: list[int] = []  # sentence indices within the document
        chunk_len = 0
        i = 0
        while i < len(lengths):
            chunk.append(i)
            chunk_len += int(lengths[i])
            if i == len(lengths) - 1 or chunk_len >= target:
                if chunk:
                    a_end_sent = int(rng.integers(1, len(chunk))) if len(chunk) >= 2 else 1
                    a = (int(bounds[chunk[0]]), int(bounds[chunk[0] + a_end_sent]))
                    random_next = False
                    if kind == "nsp" and n_docs > 1 and (len(chunk) == 1 or rng.random() < next_sentence_prob):
                        random_next = True
                        target_b = target - (a[1] - a[0])
                        other = int(rng.integers(0, n_docs - 1))
                        other += other >= d  # any document but this one
                        ob = doc_sentences[other]
                        start = int(rng.integers(0, len(ob) - 1))
                        end = start + 1  # at least one sentence, then until the target is reached
                        while end < len(ob) - 1 and ob[end] - ob[start] < target_b:
                            end += 1
                        b = (int(ob[start]), int(ob[end]))
                        # "put back" the chunk's unused sentences for the next instance
                        i -= len(chunk) - a_end_sent
                    elif len(chunk) >= 2:
                        b = (a[1], int(bounds[chunk[-1] + 1]))
                    else:  # one sentence and no other document (or SOP): split it in the middle
                        mid = (a[0] + a[1]) // 2
                        a, b = (a[0], mid), (mid, a[1])
                    if a[1] > a[0] and b[1] > b[0]:
                        label = int(random_next)
                        if kind == "sop" and rng.random() < 0.5:
                            a, b, label = b, a, 1
                        rows.append((a[0], a[1], b[0], b[1], label))
                chunk, chunk_len = [], 0
            i += 1
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 5)  # (N, 5)
    return PairInstances(*(table[:, k] for k in range(5)))


def truncate_pair(a: np.ndarray, b: np.ndarray, max_num_tokens: int, rng: np.random.Generator):
    """google-research/bert `truncate_seq_pair`: trim the longer segment, from its front or back at
    random (to add noise, reference comment), until both fit. Returns (a, b) views."""
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    while (a_hi - a_lo) + (b_hi - b_lo) > max_num_tokens:
        if a_hi - a_lo > b_hi - b_lo:
            if rng.random() < 0.5:
                a_lo += 1
            else:
                a_hi -= 1
        elif rng.random() < 0.5:
            b_lo += 1
        else:
            b_hi -= 1
    return a[a_lo:a_hi], b[b_lo:b_hi]
