"""Batches of sentence pairs for an encoder-decoder: token-budget batching and the seq2seq collator.

Vaswani et al. §5.1: "Sentence pairs were batched together by approximate sequence length. Each training
batch contained a set of sentence pairs containing approximately 25000 source tokens and 25000 target
tokens." Batching by a token budget instead of a pair count keeps the work per step even (short
captions make big batches, long sentences small ones), and grouping by length keeps padding low.

The collator builds what the seq2seq LM head expects (lmforge.heads.lm.Seq2SeqLMHead): `labels` are the
target ids (EOS included, padding = IGNORE) and `decoder_input_ids` the labels shifted right behind
`decoder_start_token_id`, so decoder position t sees labels[:t] and predicts labels[t].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from lmforge.objectives.masking import IGNORE


def token_budget_batches(source_lengths: Sequence[int], target_lengths: Sequence[int], max_tokens: int,
                         rng: np.random.Generator | None = None) -> list[list[int]]:
    """Pair indices grouped into batches whose padded size stays within `max_tokens` on each side:
    batch size x longest source <= max_tokens, and the same for targets (§5.1). Pairs are sorted by
    length (target, then source) so a batch holds similar lengths; with `rng` the order of the batches
    is shuffled (each epoch its own generator), the batches themselves stay length-grouped.
    A single pair longer than the budget is refused: it could never be batched."""
    src, tgt = np.asarray(source_lengths, dtype=np.int64), np.asarray(target_lengths, dtype=np.int64)
    if src.shape != tgt.shape:
        raise ValueError(f"{len(src)} source lengths but {len(tgt)} target lengths")
    too_long = np.flatnonzero(np.maximum(src, tgt) > max_tokens)
    if too_long.size:
        raise ValueError(f"pair {int(too_long[0])} has {int(max(src[too_long[0]], tgt[too_long[0]]))} tokens, "
                         f"more than the batch budget max_tokens={max_tokens}")
    order = np.lexsort((src, tgt))  # by target length, then source length
    batches: list[list[int]] = []
    current: list[int] = []
    longest_src = longest_tgt = 0
    for index in order.tolist():
        s, t = max(longest_src, int(src[index])), max(longest_tgt, int(tgt[index]))
        if current and (len(current) + 1) * max(s, t) > max_tokens:
            batches.append(current)
            current, s, t = [], int(src[index]), int(tgt[index])
        current.append(index)
        longest_src, longest_tgt = s, t
    if current:
        batches.append(current)
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def shift_right(labels: torch.Tensor, start_id: int, pad_id: int) -> torch.Tensor:
    """(B, T) labels -> (B, T) decoder inputs: start token, then labels[:, :-1], IGNORE -> pad."""
    shifted = labels.new_full(labels.shape, pad_id)
    shifted[:, 0] = start_id
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE, pad_id)


def _pad(rows: Sequence[Sequence[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and their (B, T) 1/0 mask."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def collate_pairs(sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], pad_id: int,
                  start_id: int) -> dict[str, torch.Tensor]:
    """A batch for TaskModel(encoder-decoder, {"seq2seq_lm"}). Targets end with EOS (the model must learn
    to stop); none of the rows may be empty."""
    if len(sources) != len(targets) or not sources:
        raise ValueError(f"{len(sources)} sources and {len(targets)} targets: need equal, non-zero counts")
    if any(len(row) == 0 for row in sources) or any(len(row) == 0 for row in targets):
        raise ValueError("an empty source or target: every pair needs tokens on both sides")
    input_ids, attention_mask = _pad(sources, pad_id)
    target_ids, target_mask = _pad(targets, pad_id)
    labels = target_ids.masked_fill(target_mask == 0, IGNORE)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "decoder_input_ids": shift_right(labels, start_id, pad_id), "decoder_attention_mask": target_mask,
            "labels": labels}
