"""Masked LM (BERT §3.1 "Task #1"; RoBERTa §4 without NSP): full sentences packed up to the length
limit (RoBERTa §4.2 FULL-SENTENCES), 15% of the tokens corrupted 80/10/10, static masks (BERT:
one mask per example) or dynamic ones (RoBERTa §4.1: re-drawn every epoch), optionally over
whole words (google-research/bert 2019 update)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lmforge.config import ModelConfig
from lmforge.objectives.base import (
    DYNAMIC,
    STATIC,
    BaseObjective,
    ExampleRandom,
    require_encoder,
    require_positions,
    require_special,
)
from lmforge.objectives.masking import MaskingSpec, mask_tokens
from lmforge.objectives.packing import full_sentence_units, pack_full_sentences

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens


@dataclass(frozen=True, kw_only=True)
class MaskingSettings:
    mlm_probability: float = 0.15  # BERT §3.1; cramming/MosaicBERT use 0.25-0.3
    mask_token_prob: float = 0.8  # of the selected: [MASK]
    random_token_prob: float = 0.1  # of the selected: random token (rest unchanged)
    whole_word_masking: bool = False
    dynamic_masking: bool = True  # RoBERTa §4.1: re-drawn each epoch; False = static (fixed per example)

    def __post_init__(self) -> None:
        self.spec()  # validates the masking rates

    def spec(self) -> MaskingSpec:
        return MaskingSpec(rate=self.mlm_probability, mask_token_prob=self.mask_token_prob,
                           random_token_prob=self.random_token_prob, whole_word=self.whole_word_masking)


@dataclass(frozen=True)
class FullSentences:
    """Units are sentences (long ones cut to the budget); example e is units examples[e]:examples[e+1]."""

    unit_lo: np.ndarray  # (U,) global token spans
    unit_hi: np.ndarray
    unit_doc: np.ndarray  # (U,) document of each unit
    examples: np.ndarray  # (E + 1,) unit offsets

    def __len__(self) -> int:
        return len(self.examples) - 1


@dataclass(frozen=True)
class MaskedLM(BaseObjective):
    """RoBERTa §4: MLM alone over FULL-SENTENCES examples; the base of the MLM+pair and ELECTRA objectives."""

    kind: ClassVar[str] = "mlm"
    Settings: ClassVar[type] = MaskingSettings
    heads: ClassVar[dict[str, dict[str, Any]]] = {"mlm": {"kind": "mlm"}}
    special_needed: ClassVar[tuple[str, ...]] = ("cls", "sep", "mask")
    settings: MaskingSettings = field(default_factory=MaskingSettings)

    @cached_property
    def spec(self) -> MaskingSpec:
        return self.settings.spec()

    def check_data(self, special: SpecialTokens) -> None:
        require_special(self.kind, special, self.special_needed)

    def check_model(self, model: ModelConfig) -> None:
        require_encoder(self.kind, model)
        require_positions(model, self.max_seq_len)

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> FullSentences:
        budget = self.max_seq_len - 2  # [CLS] ... [SEP]
        bounds = np.stack([corpus.sent_lo, corpus.sent_hi], 1)  # (S, 2)
        lo, hi, doc = full_sentence_units(bounds, corpus.sent_doc, budget)
        return FullSentences(lo, hi, doc, pack_full_sentences(hi - lo, doc, budget))

    def example(self, corpus: Corpus, layout: FullSentences, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        return self.mask(corpus, *full_sentences(corpus, layout, index), rngs)

    def mask(self, corpus: Corpus, ids: np.ndarray, word_start: np.ndarray, special: np.ndarray,
             rngs: ExampleRandom) -> dict[str, Any]:
        """input_ids with 15% of the non-special positions corrupted; mlm_labels the originals there."""
        dynamic = self.settings.dynamic_masking  # RoBERTa §4.1: a new mask every time the example is seen
        rng = rngs.per_epoch(DYNAMIC) if dynamic else rngs.fixed(STATIC)  # BERT: one mask per example
        inputs, labels = mask_tokens(ids, word_start, special, rng, self.spec, corpus.special.mask,
                                     corpus.ordinary_ids)
        return {"input_ids": inputs, "mlm_labels": labels}


def full_sentences(corpus: Corpus, layout: FullSentences, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[CLS] s1 s2 ... [SEP], an extra [SEP] where a document ends (RoBERTa §4.2 FULL-SENTENCES).
    Returns ids, word-start bits and the special-token flags, each (T,)."""
    u0, u1 = layout.examples[index], layout.examples[index + 1]
    cls, sep = corpus.special.cls, corpus.special.sep
    one = np.ones(1, bool)
    ids, ws, special = [np.asarray([cls])], [one], [one]
    for u in range(u0, u1):
        if u > u0 and layout.unit_doc[u] != layout.unit_doc[u - 1]:
            ids.append(np.asarray([sep])), ws.append(one), special.append(one)
        t, w = corpus.read(int(layout.unit_lo[u]), int(layout.unit_hi[u]))
        ids.append(t), ws.append(w), special.append(np.zeros(len(t), bool))
    ids.append(np.asarray([sep])), ws.append(one), special.append(one)
    return np.concatenate(ids).astype(np.int64), np.concatenate(ws), np.concatenate(special)
