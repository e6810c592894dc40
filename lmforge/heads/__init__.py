"""Task heads, each owning its loss, composed with a backbone by `TaskModel`."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.heads.base import Head, HeadOutput
from lmforge.heads.bilm import BiLMHead
from lmforge.heads.lm import IGNORE, CausalLMHead, MaskedLMHead, PermutationLMHead, Seq2SeqLMHead
from lmforge.heads.pretraining import ReplacedTokenHead, SegmentPairHead, SentenceOrderHead
from lmforge.heads.tasks import (
    MultipleChoiceHead,
    SequenceClassificationHead,
    SimilarityHead,
    SpanHead,
    TokenClassificationHead,
)

HEADS: dict[str, type[Head]] = {
    cls.kind: cls
    for cls in (
        MaskedLMHead,
        CausalLMHead,
        Seq2SeqLMHead,
        PermutationLMHead,
        SegmentPairHead,
        SentenceOrderHead,
        ReplacedTokenHead,
        BiLMHead,
        SequenceClassificationHead,
        SimilarityHead,
        MultipleChoiceHead,
        TokenClassificationHead,
        SpanHead,
    )
}


def build_head(config: ModelConfig, backbone: Any, spec: dict[str, Any]) -> Head:
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in HEADS:
        raise ValueError(f"unknown head kind {kind!r}; known: {', '.join(HEADS)}")
    return HEADS[kind](config, backbone, **spec)


__all__ = ["HEADS", "IGNORE", "Head", "HeadOutput", "build_head"] + [c.__name__ for c in HEADS.values()]
