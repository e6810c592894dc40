"""Translation (Vaswani et al. 2017): an encoder-decoder trained on sentence pairs with label-smoothed
cross-entropy (§5.4, eps = 0.1) in batches of about `max_tokens` tokens, pairs grouped by length (§5.1).

The data is parallel text prepared with `lmforge prepare --format parallel`: each pair is one document
of two sentences, source then target. Both sides get the end-of-sentence token appended (Marian's
`</s>`, else [SEP]: the encoder sees where the source ends, the decoder learns to stop); the decoder's
inputs are the target shifted right behind the padding id, Marian's decoder start token.

One dataset example is one whole token-budget batch, fixed when the data opens, so the trainer's
batch plan (a seeded permutation of examples per epoch) shuffles batches, not pairs, and exact resume,
gradient accumulation and data parallelism work unchanged: set `optim.batch_size` to 1 (batches per
micro-step) and `max_tokens` to the per-step budget.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.data.translation import collate_pairs, token_budget_batches
from lmforge.models import TaskModel
from lmforge.objectives.base import BaseObjective, ExampleRandom, document_end, pad_id, require_positions

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens
    from lmforge.train.config import PretrainConfig

log = logging.getLogger(__name__)

HEAD = "seq2seq_lm"  # the head name HF Marian export maps (lmforge.convert.families.marian)


@dataclass(frozen=True, kw_only=True)
class TranslationSettings:
    max_tokens: int = 4096  # padded tokens per batch on each side (§5.1 used ~25000 per side on 8 GPUs)
    label_smoothing: float = 0.1  # §5.4

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"objective.max_tokens must be >= 1, got {self.max_tokens}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class PairBatches:
    """Token spans of the kept pairs (without EOS) and the batches of pair indices."""

    src_lo: np.ndarray
    src_hi: np.ndarray
    tgt_lo: np.ndarray
    tgt_hi: np.ndarray
    batches: list[np.ndarray]
    too_long: int  # pairs skipped: a side longer than max_seq_len with its EOS
    not_pairs: int  # documents that are not two sentences (a side tokenized to nothing)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass(frozen=True)
class Translation(BaseObjective):
    kind: ClassVar[str] = "translation"
    Settings: ClassVar[type] = TranslationSettings
    heads: ClassVar[dict[str, dict[str, Any]]] = {HEAD: {"kind": "seq2seq_lm", "label_smoothing": 0.1}}
    settings: TranslationSettings = field(default_factory=TranslationSettings)

    def check_data(self, special: SpecialTokens) -> None:
        if document_end(special) is None:
            raise ValueError(f"objective {self.kind!r} needs special tokens ['eos (or sep)'] that the tokenizer lacks")

    def check_model(self, model: ModelConfig) -> None:
        if not model.num_decoder_layers:
            raise ValueError(f"objective {self.kind} needs an encoder-decoder (a transformer-small/base/big preset), "
                             "got a model without a decoder")
        require_positions(model, self.max_seq_len)
        if self.settings.max_tokens < self.max_seq_len:
            raise ValueError(f"objective.max_tokens {self.settings.max_tokens} is smaller than max_seq_len "
                             f"{self.max_seq_len}: the longest pairs could never be batched")

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> PairBatches:
        if corpus.manifest.get("config", {}).get("format") != "parallel":
            raise ValueError(f"{corpus.dir}: not parallel text; prepare the pairs with `lmforge prepare "
                             "--format parallel --input SRC TGT`")
        first = corpus.doc_first
        is_pair = np.diff(first) == 2
        src = first[:-1][is_pair]
        src_lo, src_hi = corpus.sent_lo[src], corpus.sent_hi[src]
        tgt_lo, tgt_hi = corpus.sent_lo[src + 1], corpus.sent_hi[src + 1]
        src_len, tgt_len = src_hi - src_lo + 1, tgt_hi - tgt_lo + 1  # + EOS
        fits = (src_len <= self.max_seq_len) & (tgt_len <= self.max_seq_len)
        layout_args = (src_lo[fits], src_hi[fits], tgt_lo[fits], tgt_hi[fits])
        batches = [np.asarray(b, dtype=np.int64)
                   for b in token_budget_batches(src_len[fits], tgt_len[fits], self.settings.max_tokens)]
        layout = PairBatches(*layout_args, batches, int((~fits).sum()), int((~is_pair).sum()))
        if layout.too_long or layout.not_pairs:
            log.warning("%s (%s): skipped %d pairs longer than max_seq_len=%d and %d documents that are not a "
                        "pair of sentences", corpus.dir, corpus.split, layout.too_long, self.max_seq_len,
                        layout.not_pairs)
        if not batches:
            raise ValueError(f"{corpus.dir} ({corpus.split}): no sentence pairs of at most max_seq_len="
                             f"{self.max_seq_len} tokens")
        return layout

    def example(self, corpus: Corpus, layout: PairBatches, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        """One token-budget batch: the source and target ids of its pairs, each ending with EOS."""
        eos = np.asarray([corpus.document_end], np.int64)

        def side(lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
            return [np.concatenate([corpus.read(int(a), int(b), bits=False)[0], eos]) for a, b in zip(lo, hi)]

        pairs = layout.batches[index]
        return {"sources": side(layout.src_lo[pairs], layout.src_hi[pairs]),
                "targets": side(layout.tgt_lo[pairs], layout.tgt_hi[pairs])}

    def collate(self, examples: list[dict[str, Any]], special: SpecialTokens) -> dict[str, torch.Tensor]:
        """Several token-budget batches (optim.batch_size > 1, or evaluation) become one padded batch."""
        sources = [ids for ex in examples for ids in ex["sources"]]
        targets = [ids for ex in examples for ids in ex["targets"]]
        pad = pad_id(special)
        return collate_pairs(sources, targets, pad, pad)

    def build_model(self, model: ModelConfig, run: PretrainConfig) -> tuple[nn.Module, dict[str, TaskModel]]:
        spec = {"kind": "seq2seq_lm", "label_smoothing": self.settings.label_smoothing}
        task_model = TaskModel(model, {HEAD: spec})
        return task_model, {"": task_model}
