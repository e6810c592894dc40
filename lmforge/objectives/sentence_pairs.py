"""MLM plus a sentence-pair task on the pooled [CLS]: next-sentence prediction (BERT §3.1 "Task #2")
or sentence-order prediction (ALBERT §4.2). Examples are [CLS] A [SEP] B [SEP] with token types 0
for [CLS] A [SEP] and 1 for B [SEP] (BERT §3); the pairs are chosen when the data opens
(`segments.build_pairs`, after google-research/bert `create_instances_from_document`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lmforge.config import ModelConfig
from lmforge.objectives.base import TRUNCATE, ExampleRandom
from lmforge.objectives.mlm import MaskedLM, MaskingSettings
from lmforge.objectives.segments import PairInstances, build_pairs, truncate_pair

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus


@dataclass(frozen=True, kw_only=True)
class PairSettings(MaskingSettings):
    short_seq_prob: float = 0.1  # BERT create_pretraining_data: sometimes shorter targets
    next_sentence_prob: float = 0.5  # NSP: actual next 50% / random 50%

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.short_seq_prob <= 1.0 or not 0.0 <= self.next_sentence_prob <= 1.0:
            raise ValueError("short_seq_prob and next_sentence_prob must be probabilities")


@dataclass(frozen=True)
class NextSentence(MaskedLM):
    """BERT §3.1: MLM + NSP (B is the actual next segment 50% of the time, a random one otherwise)."""

    kind: ClassVar[str] = "mlm_nsp"
    Settings: ClassVar[type] = PairSettings
    reads_pooler: ClassVar[bool] = True
    pair: ClassVar[str] = "nsp"  # build_pairs kind, head kind and label prefix
    heads: ClassVar[dict[str, dict[str, Any]]] = {"mlm": {"kind": "mlm"}, "nsp": {"kind": "nsp"}}
    settings: PairSettings = field(default_factory=PairSettings)

    def check_model(self, model: ModelConfig) -> None:
        super().check_model(model)
        if model.type_vocab_size < 2:
            raise ValueError(f"objective {self.kind} uses two segments; model type_vocab_size is {model.type_vocab_size}")

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> PairInstances:
        return build_pairs(corpus.document_sentences(), self.max_seq_len, rng, kind=self.pair,
                           short_seq_prob=self.settings.short_seq_prob,
                           next_sentence_prob=self.settings.next_sentence_prob)

    def example(self, corpus: Corpus, layout: PairInstances, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        ids, ws, special, types = self.segments(corpus, layout, index, rngs)
        return {f"{self.pair}_labels": int(layout.label[index]), **self.mask(corpus, ids, ws, special, rngs),
                "token_type_ids": types}

    def segments(self, corpus: Corpus, pairs: PairInstances, index: int, rngs: ExampleRandom):
        """[CLS] A [SEP] B [SEP], A and B truncated to fit (`truncate_pair`); ids, word starts,
        special flags and token types, each (T,)."""
        a, wa = corpus.read(int(pairs.a_start[index]), int(pairs.a_end[index]))
        b, wb = corpus.read(int(pairs.b_start[index]), int(pairs.b_end[index]))
        a_idx, b_idx = truncate_pair(np.arange(len(a)), np.arange(len(b)), self.max_seq_len - 3,
                                     rngs.fixed(TRUNCATE))
        a, wa, b, wb = a[a_idx], wa[a_idx], b[b_idx], wb[b_idx]
        cls, sep = corpus.special.cls, corpus.special.sep
        ids = np.concatenate([[cls], a, [sep], b, [sep]]).astype(np.int64)
        ws = np.concatenate([[True], wa, [True], wb, [True]])
        special = np.zeros(len(ids), bool)
        special[[0, len(a) + 1, len(ids) - 1]] = True
        types = np.zeros(len(ids), np.int64)
        types[len(a) + 2:] = 1
        return ids, ws, special, types


@dataclass(frozen=True)
class SentenceOrder(NextSentence):
    """ALBERT §4.2: MLM + SOP (B always follows A in the source; swapped with p = 0.5)."""

    kind: ClassVar[str] = "mlm_sop"
    pair: ClassVar[str] = "sop"
    heads: ClassVar[dict[str, dict[str, Any]]] = {"mlm": {"kind": "mlm"}, "sop": {"kind": "sop"}}
