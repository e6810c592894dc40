"""Masked-LM corruption (BERT §3.1 "Task #1: Masked LM" and Appendix A.1), as in google-research/bert
`create_masked_lm_predictions`.

Selection is by count, not by coin: num_to_predict = max(1, round(len(candidates) * rate)) of the
non-special positions, taken from a shuffled list of candidate words. With whole-word masking a
word's sub-tokens are one candidate and a word that would overshoot the count is skipped, exactly
like the reference. Each selected position then becomes [MASK] 80%, a random token 10%, itself 10%.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE = -100


@dataclass(frozen=True)
class MaskingSpec:
    rate: float = 0.15  # BERT §3.1: 15% of WordPiece tokens
    mask_token_prob: float = 0.8  # BERT Appendix A.1: 80% [MASK]
    random_token_prob: float = 0.1  # 10% random token, remaining 10% unchanged
    whole_word: bool = False  # google-research/bert "Whole Word Masking" (2019 update)

    def __post_init__(self) -> None:
        if not 0.0 < self.rate < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.rate}")
        if self.mask_token_prob < 0 or self.random_token_prob < 0 or self.mask_token_prob + self.random_token_prob > 1:
            raise ValueError(
                f"mask_token_prob {self.mask_token_prob} + random_token_prob {self.random_token_prob} must be within [0, 1]"
            )


def mask_tokens(
    ids: np.ndarray,
    word_start: np.ndarray,
    special: np.ndarray,
    rng: np.random.Generator,
    spec: MaskingSpec,
    mask_id: int,
    random_pool: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt one sequence. ids (T,) int; word_start (T,) bool; special (T,) bool marks positions
    never selected ([CLS]/[SEP]/padding). random_pool: the ids a "random token" is drawn from.
    Returns (input_ids, labels) with labels = original id at selected positions, IGNORE elsewhere."""
    ids = np.asarray(ids, dtype=np.int64)
    candidates = np.flatnonzero(~special)
    labels = np.full(len(ids), IGNORE, dtype=np.int64)
    if len(candidates) == 0:
        return ids.copy(), labels
    num_to_predict = max(1, int(round(len(candidates) * spec.rate)))
    if spec.whole_word:
        # a word = a candidate starting at a word-start bit (or after a special) plus its continuation
        starts = word_start[candidates].copy()
        starts[0] = True
        starts[1:] |= np.diff(candidates) != 1  # a special token in between always splits words
        groups = np.split(candidates, np.flatnonzero(starts)[1:])
        chosen: list[np.ndarray] = []
        count = 0
        for g in rng.permutation(len(groups)):
            if count >= num_to_predict:
                break
            size = len(groups[g])
            if count + size > num_to_predict:  # reference skips words that would overshoot
                continue
            chosen.append(groups[g])
            count += size
        selected = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
    else:
        selected = np.sort(rng.permutation(candidates)[:num_to_predict])
    labels[selected] = ids[selected]
    out = ids.copy()
    draw = rng.random(len(selected))
    to_mask = selected[draw < spec.mask_token_prob]
    to_random = selected[(draw >= spec.mask_token_prob) & (draw < spec.mask_token_prob + spec.random_token_prob)]
    out[to_mask] = mask_id
    # "a random token": drawn from the vocabulary minus special tokens, so [CLS]/[SEP]/[PAD] never
    # appear inside text (the reference draws from the whole vocab, which includes [unused] rows)
    out[to_random] = rng.choice(random_pool, size=len(to_random))
    return out, labels
