"""XLNet's permutation language modelling (Yang et al. 2019 §2.2-2.3), as the reference data pipeline
builds it (xlnet `data_utils.py`: `_sample_mask` for the targets, `_local_perm` for the order).

Example layout (§2.5, the reference's pre-training input): `A <sep> B <sep> <cls>`, segments 0, 1
and 2 for <cls>, cut from FULL-SENTENCES units at a sentence boundary (the first document change
if there is one), padded on the left when a batch holds shorter ones.

Targets (partial prediction, §2.3): num_predict = length // K tokens (K = 6) in spans. Each span is
an n-gram of whole words, n in 1..5 with p(n) proportional to 1/n, inside a context of n * alpha / beta
tokens (alpha = 6, beta = 1) from which the span's left offset is drawn uniformly; spans start at a
word start. A span that would overshoot num_predict is shortened by whole words (the reference's
n-gram counts pieces: its word check reads `seg[beg]`, which is always a word start); then random
other tokens top the count up to exactly num_predict. <sep>/<cls> are never targets.

Order (§2.2): a random factorization order in blocks of `perm_size` positions, the blocks in
sequence order and the same shuffle inside each (the reference reshapes, transposes and shuffles).
Non-targets come first (rank -1): every position sees them, they see no target (no leak).
Target i sees the positions before it in the order, never itself (query stream); <sep>/<cls> are
in the order like targets but see themselves. The content stream reads the real tokens - there is
no <mask> input - and additionally always sees its own position (lmforge.models.xlnet).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from lmforge.objectives.base import DYNAMIC, BaseObjective, ExampleRandom, pad_id, require_special
from lmforge.objectives.masking import IGNORE
from lmforge.objectives.mlm import FullSentences
from lmforge.objectives.packing import full_sentence_units, pack_full_sentences

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens

SEG_A, SEG_B, SEG_CLS, SEG_PAD = 0, 1, 2, 4  # the reference's segment ids (SEG_ID_* in data_utils.py)


@dataclass(frozen=True, kw_only=True)
class PLMSettings:
    plm_k: int = 6  # §2.3: predict 1/K of the tokens (K = 6 for XLNet-Large, §3.1)
    max_ngram: int = 5  # reference `max_gram`
    mask_alpha: int = 6  # reference: spans of n tokens in a context of n * alpha / beta
    mask_beta: int = 1
    perm_size: int = 0  # permutation block; 0 = the whole sequence (§2.2). The reference trains with seq_len / 2

    def __post_init__(self) -> None:
        if self.plm_k < 1:
            raise ValueError(f"plm_k must be >= 1, got {self.plm_k}")
        if self.max_ngram < 1:
            raise ValueError(f"max_ngram must be >= 1, got {self.max_ngram}")
        if not 1 <= self.mask_beta <= self.mask_alpha:
            raise ValueError(f"need 1 <= mask_beta <= mask_alpha, got alpha={self.mask_alpha}, beta={self.mask_beta}")
        if self.perm_size < 0:
            raise ValueError(f"perm_size must be >= 0 (0 = the whole sequence), got {self.perm_size}")


# ------------------------------------------------------------------------------------ targets
def span_targets(word_start: np.ndarray, goal: int, rng: np.random.Generator, max_ngram: int = 5,
                 alpha: int = 6, beta: int = 1) -> np.ndarray:
    """The reference's `_sample_mask` span phase over one sequence: (T,) bool, at most `goal` True."""
    T = len(word_start)
    mask = np.zeros(T, dtype=bool)
    ngrams = np.arange(1, max_ngram + 1)
    pvals = 1.0 / ngrams
    pvals /= pvals.sum()
    count, cur = 0, 0
    while cur < T and count < goal:
        n = int(rng.choice(ngrams, p=pvals))
        ctx = n * alpha // beta
        left = int(rng.integers(ctx))
        beg = cur + left
        while beg < T and not word_start[beg]:  # a span starts at a whole word
            beg += 1
        if beg >= T:
            break
        bounds = np.append(beg + np.flatnonzero(word_start[beg:]), T)  # word starts from beg on, then T
        words = next((k for k in range(min(n, len(bounds) - 1), 0, -1) if bounds[k] - beg <= goal - count), 0)
        if words == 0 or bounds[words] >= T:  # nothing fits, or (reference) the n-gram runs to the end
            break
        end = int(bounds[words])
        mask[beg:end] = True
        count += end - beg
        cur = end + (ctx - left)
    return mask


def top_up(mask: np.ndarray, selectable: np.ndarray, goal: int, rng: np.random.Generator) -> np.ndarray:
    """Keep the selectable targets of `mask` and add random selectable positions up to `goal`."""
    mask = mask & selectable
    missing = goal - int(mask.sum())
    if missing > 0:
        free = np.flatnonzero(selectable & ~mask)
        mask[rng.choice(free, size=min(missing, len(free)), replace=False)] = True
    return mask


def block_ranks(length: int, perm_size: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) position of each token in the factorization order: rank = block start + shuffle(offset),
    one shuffle for every block (`_local_perm`); a shorter last block keeps the shuffle's order."""
    perm_size = perm_size or length
    shuffle = rng.permutation(perm_size)
    ranks = np.empty(length, dtype=np.int64)
    for start in range(0, length, perm_size):
        n = min(perm_size, length - start)
        ranks[start:start + n] = start + np.argsort(np.argsort(shuffle[:n]))
    return ranks


def perm_mask(ranks: torch.Tensor, target: torch.Tensor, functional: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool, True = query i may not see j (`_local_perm`): j is a target or <sep>/<cls> not
    before i in the order; target i also not itself. ranks, target, functional: (B, T)."""
    ordered = target | functional
    rev = torch.where(ordered, ranks, torch.full_like(ranks, -1))  # non-targets first
    self_rev = torch.where(target, rev, rev + 1)  # a target may not see itself, the others may
    return (self_rev[:, :, None] <= rev[:, None, :]) & ordered[:, None, :]


def build_example(text: list[np.ndarray], word_start: list[np.ndarray], special: SpecialTokens,
                  settings: PLMSettings, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`A <sep> B <sep> <cls>` from the segments A (and B), its targets and order. text/word_start:
    one or two arrays; B may be missing (`A <sep> <cls>`)."""
    ids, types, ws, func = [], [], [], []
    for seg, (tokens, starts) in enumerate(zip(text, word_start)):
        ids += [tokens, [special.sep]]
        types += [np.full(len(tokens) + 1, seg)]
        ws += [starts, [True]]
        func += [np.zeros(len(tokens), bool), [True]]
    ids, ws, func = np.concatenate(ids + [[special.cls]]), np.concatenate(ws + [[True]]), np.concatenate(func + [[True]])
    types = np.concatenate(types + [[SEG_CLS]])
    selectable = ~func
    goal = min(int(selectable.sum()), max(1, len(ids) // settings.plm_k))
    spans = span_targets(ws.astype(bool), goal, rng, settings.max_ngram, settings.mask_alpha, settings.mask_beta)
    target = top_up(spans, selectable, goal, rng)
    return {"input_ids": ids.astype(np.int64), "token_type_ids": types.astype(np.int64),
            "perm_rank": block_ranks(len(ids), settings.perm_size, rng),
            "plm_target": target.astype(np.int64), "functional": func.astype(np.int64)}


@dataclass(frozen=True)
class PermutationLM(BaseObjective):
    kind: ClassVar[str] = "plm"
    Settings: ClassVar[type] = PLMSettings
    heads: ClassVar[dict[str, dict[str, Any]]] = {"plm": {"kind": "plm"}}
    settings: PLMSettings = field(default_factory=PLMSettings)

    def check_data(self, special: SpecialTokens) -> None:
        require_special(self.kind, special, ("cls", "sep"))

    def check_model(self, model: Any) -> None:
        if model.arch != "xlnet":
            raise ValueError(f"objective {self.kind} needs an XLNet model (preset xlnet-cpu, xlnet-base-cased, "
                             f"...), got arch {model.arch!r}")
        if self.max_seq_len > model.max_position_embeddings:
            raise ValueError(f"objective.max_seq_len {self.max_seq_len} exceeds the model's "
                             f"max_position_embeddings {model.max_position_embeddings}")
        if self.settings.perm_size and self.max_seq_len % self.settings.perm_size:
            raise ValueError(f"objective.perm_size {self.settings.perm_size} must divide max_seq_len {self.max_seq_len}")

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> FullSentences:
        budget = self.max_seq_len - 3  # A <sep> B <sep> <cls>
        bounds = np.stack([corpus.sent_lo, corpus.sent_hi], 1)  # (S, 2)
        lo, hi, doc = full_sentence_units(bounds, corpus.sent_doc, budget)
        return FullSentences(lo, hi, doc, pack_full_sentences(hi - lo, doc, budget))

    def example(self, corpus: Corpus, layout: FullSentences, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        rng = rngs.per_epoch(DYNAMIC)  # a new order and new targets every epoch
        u0, u1 = int(layout.examples[index]), int(layout.examples[index + 1])
        units = [corpus.read(int(layout.unit_lo[u]), int(layout.unit_hi[u])) for u in range(u0, u1)]
        docs = layout.unit_doc[u0:u1]
        changes = np.flatnonzero(docs[1:] != docs[:-1]) + 1
        if len(changes):  # A and B from different documents: cut there
            cut = int(changes[0])
        elif len(units) > 1:  # a random sentence boundary (the reference cuts between sentences)
            cut = int(rng.integers(1, len(units)))
        else:
            cut = 0
        if cut:
            parts = [units[:cut], units[cut:]]
            text = [np.concatenate([t for t, _ in p]) for p in parts]
            starts = [np.concatenate([w for _, w in p]) for p in parts]
        else:  # one sentence: cut it at a word start near the middle, or keep it whole
            tokens, ws = units[0]
            middle = np.flatnonzero(ws[1:]) + 1
            at = int(middle[np.abs(middle - len(tokens) // 2).argmin()]) if len(middle) else 0
            text = [tokens[:at], tokens[at:]] if at else [tokens]
            starts = [ws[:at], ws[at:]] if at else [ws]
        return build_example(text, starts, corpus.special, self.settings, rng)

    def collate(self, examples: list[dict[str, Any]], special: SpecialTokens) -> dict[str, torch.Tensor]:
        """Left padding (XLNet's <cls> stays last); perm_mask (B, T, T) 1 = may not see, target_mapping
        (B, M, T) one-hot rows in position order, plm_labels (B, M) with IGNORE on rows beyond a row's
        targets. All int64, like every pre-training batch (HF's model takes them as floats)."""
        B, T = len(examples), max(len(ex["input_ids"]) for ex in examples)
        batch = {"input_ids": torch.full((B, T), pad_id(special), dtype=torch.long),
                 "attention_mask": torch.zeros(B, T, dtype=torch.long),
                 "token_type_ids": torch.full((B, T), SEG_PAD, dtype=torch.long)}
        ranks, target, func = (torch.zeros(B, T, dtype=torch.long) for _ in range(3))
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            batch["input_ids"][i, T - n:] = torch.from_numpy(ex["input_ids"])
            batch["attention_mask"][i, T - n:] = 1
            batch["token_type_ids"][i, T - n:] = torch.from_numpy(ex["token_type_ids"])
            ranks[i, T - n:] = torch.from_numpy(ex["perm_rank"])
            target[i, T - n:] = torch.from_numpy(ex["plm_target"])
            func[i, T - n:] = torch.from_numpy(ex["functional"])
        target, func = target.bool(), func.bool()
        batch["perm_mask"] = perm_mask(ranks, target, func).long()
        M = int(target.sum(1).max())
        mapping = torch.zeros(B, M, T, dtype=torch.long)
        labels = torch.full((B, M), IGNORE, dtype=torch.long)
        for i in range(B):
            positions = target[i].nonzero().squeeze(1)
            mapping[i, torch.arange(len(positions)), positions] = 1
            labels[i, :len(positions)] = batch["input_ids"][i, positions]
        batch["target_mapping"], batch["plm_labels"] = mapping, labels
        return batch
