"""Span corruption (Raffel et al. 2020 §3.1.4, §3.3.4; the reference `random_spans_noise_mask`): T5's
pre-training objective. Contiguous spans of the text are dropped from the encoder input, each replaced by
one sentinel token; the target is the dropped spans, each behind the sentinel that replaced it:

    text    Thank you for inviting me to your party last week .
    input   Thank you <X> me to your party <Y> week . </s>
    target  <X> for inviting <Y> last </s>

Noise density 0.15 and mean span length 3 (§3.3.4's choice). The text is the corpus stream (documents
joined by </s>, as the CLM objective cuts it) in blocks of a raw length chosen so that the encoder input
fills `max_seq_len` exactly (`raw_length`: 568 raw tokens -> 512 input / 114 target tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from lmforge.config import ModelConfig
from lmforge.data.translation import collate_pairs
from lmforge.objectives.base import DYNAMIC, BaseObjective, ExampleRandom, require_special
from lmforge.objectives.clm import Blocks, CausalLM

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens

NUM_SENTINELS = 100  # <extra_id_0> .. <extra_id_99>, counting down from the end of the vocabulary


@dataclass(frozen=True, kw_only=True)
class SpanCorruptionSettings:
    noise_density: float = 0.15  # §3.3.4: the fraction of tokens corrupted
    mean_noise_span_length: float = 3.0  # §3.3.4: the mean length of a corrupted span

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}")
        if not self.mean_noise_span_length >= 1.0:
            raise ValueError(f"mean_noise_span_length must be >= 1, got {self.mean_noise_span_length}")


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a `length`-token text: round(L * density) clamped to [1, L - 1]
    (at least one token is corrupted and one kept); max(1, round(noise / mean_span)) spans."""
    noise = min(max(int(round(length * density)), 1), length - 1)
    return noise, max(int(round(noise / mean_span)), 1)


def corrupted_lengths(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(input, target) lengths of a `length`-token text: the kept tokens plus one sentinel per span plus
    </s>; the noise tokens plus one sentinel per span plus </s>."""
    noise, spans = span_counts(length, density, mean_span)
    return length - noise + spans + 1, noise + spans + 1


def raw_length(inputs_length: int, density: float = 0.15, mean_span: float = 3.0) -> int:
    """The longest text whose corrupted input fits `inputs_length` tokens (the reference's
    `compute_input_and_target_lengths`)."""
    length = inputs_length
    while corrupted_lengths(length + 1, density, mean_span)[0] <= inputs_length:
        length += 1
    return length


def _segments(rng: np.random.Generator, items: int, count: int) -> np.ndarray:
    """`items` split into `count` non-empty runs at uniformly random cut points: (count,) lengths."""
    cuts = np.sort(rng.choice(np.arange(1, items), size=count - 1, replace=False)) if count > 1 else []
    return np.diff(np.concatenate([[0], cuts, [items]])).astype(np.int64)


def noise_mask(length: int, density: float, mean_span: float, rng: np.random.Generator) -> np.ndarray:
    """(L,) bool, True = corrupted: noise and kept tokens each split into the same number of non-empty
    spans, interleaved kept-first. A 1-token text is masked as if it had 2 tokens, then cut (as the
    reference does), so it keeps its token."""
    padded = max(length, 2)
    noise, spans = span_counts(padded, density, mean_span)
    kept_runs, noise_runs = _segments(rng, padded - noise, spans), _segments(rng, noise, spans)
    runs = np.stack([kept_runs, noise_runs], axis=1).reshape(-1)  # kept0, noise0, kept1, noise1, ...
    is_noise = np.repeat(np.tile([False, True], spans), runs)
    return is_noise[:length]


def corrupt(tokens: np.ndarray, mask: np.ndarray, first_sentinel: int, eos: int) -> tuple[np.ndarray, np.ndarray]:
    """(input, target): each run of masked tokens becomes one sentinel in the input, each run of kept
    tokens one sentinel in the target; sentinels count down from `first_sentinel`; both end with </s>."""

    def replace(drop: np.ndarray) -> np.ndarray:
        starts = drop & ~np.concatenate([[False], drop[:-1]])  # (L,) first token of each dropped run
        sentinels = first_sentinel + 1 - np.cumsum(starts)  # the k-th run gets first_sentinel - k
        out = np.where(starts, sentinels, tokens)[~drop | starts]
        return np.concatenate([out, [eos]]).astype(np.int64)

    return replace(mask), replace(~mask)


@dataclass(frozen=True)
class SpanCorruption(BaseObjective):
    kind: ClassVar[str] = "span_corruption"
    Settings: ClassVar[type] = SpanCorruptionSettings
    heads: ClassVar[dict[str, dict[str, Any]]] = {"lm": {"kind": "seq2seq_lm"}}
    settings: SpanCorruptionSettings = SpanCorruptionSettings()

    @property
    def raw_length(self) -> int:
        return raw_length(self.max_seq_len, self.settings.noise_density, self.settings.mean_noise_span_length)

    def _stream(self) -> CausalLM:
        """The corpus stream in raw-length blocks, cut as the CLM objective cuts it."""
        return CausalLM(self.raw_length)

    def check_data(self, special: SpecialTokens) -> None:
        require_special(self.kind, special, ("pad", "eos"))

    def check_model(self, model: ModelConfig) -> None:
        if not model.num_decoder_layers:
            raise ValueError(f"objective {self.kind} needs an encoder-decoder model (a T5 preset such as t5-mini)")
        _, target = corrupted_lengths(self.raw_length, self.settings.noise_density,
                                      self.settings.mean_noise_span_length)
        if max(self.max_seq_len, target) > model.max_position_embeddings:
            raise ValueError(f"objective.max_seq_len {self.max_seq_len} (targets {target}) exceeds the model's "
                             f"max_position_embeddings={model.max_position_embeddings}")

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> Blocks:
        spans = span_counts(self.raw_length, self.settings.noise_density, self.settings.mean_noise_span_length)[1]
        needed = range(corpus.vocab_size - 1, corpus.vocab_size - 1 - spans, -1)
        if spans > NUM_SENTINELS or not set(needed) <= set(corpus.special.all_ids):
            raise ValueError(f"objective {self.kind} with max_seq_len {self.max_seq_len} needs {spans} sentinel "
                             f"tokens (<extra_id_0>.. as the last special tokens of the vocabulary, at most "
                             f"{NUM_SENTINELS}); this tokenizer lacks them: train one with --family t5")
        return self._stream().layout(corpus, rng)

    def example(self, corpus: Corpus, layout: Blocks, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        tokens = self._stream().example(corpus, layout, index, rngs)["input_ids"]
        mask = noise_mask(len(tokens), self.settings.noise_density, self.settings.mean_noise_span_length,
                          rngs.per_epoch(DYNAMIC))  # new spans every epoch, as T5 draws them per pass
        source, target = corrupt(tokens, mask, corpus.vocab_size - 1, corpus.document_end)
        return {"input_ids": source, "target_ids": target}

    def collate(self, examples: list[dict[str, Any]], special: SpecialTokens) -> dict[str, torch.Tensor]:
        # T5 starts the decoder from the pad token
        return collate_pairs([ex["input_ids"].tolist() for ex in examples],
                             [ex["target_ids"].tolist() for ex in examples], special.pad, special.pad)
