"""Objectives by `kind`, and the `objective:` config block composed from their settings.

The block stays flat (`objective.mlm_probability=0.3`, as configs/*.yaml write it): its fields are
`kind`, `max_seq_len` and the union of every registered objective's `Settings` fields, so a new
objective's settings appear in the block when its class is added to `OBJECTIVES`. Each objective
reads only its own fields (`make_objective`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from lmforge.objectives.base import Objective, settings_from
from lmforge.objectives.bilm import BiLM
from lmforge.objectives.clm import CausalLM
from lmforge.objectives.distill import Distill
from lmforge.objectives.electra import Electra
from lmforge.objectives.mlm import MaskedLM
from lmforge.objectives.plm import PermutationLM
from lmforge.objectives.sentence_pairs import NextSentence, SentenceOrder
from lmforge.objectives.span_corruption import SpanCorruption
from lmforge.objectives.tinybert import TinyBertDistill
from lmforge.objectives.translation import Translation

# BERT §3.1 (MLM + NSP), RoBERTa §4 (MLM only), ALBERT §4.2 (MLM + SOP), ELECTRA §2, GPT (CLM),
# DistilBERT §2 (distill), TinyBERT §3 general distillation (tinybert), ELMo §3.1 (bilm), T5 §3.1.4
# (span_corruption), XLNet §2.2-2.3 (plm), Vaswani et al. 2017 §5 (translation)
OBJECTIVES: dict[str, type] = {cls.kind: cls for cls in (MaskedLM, NextSentence, SentenceOrder, Electra, CausalLM,
                                                         Distill, TinyBertDistill, BiLM, SpanCorruption,
                                                         PermutationLM, Translation)}

MIN_SEQ_LEN = 8


def objective_class(kind: str) -> type:
    if kind not in OBJECTIVES:
        raise ValueError(f"unknown objective kind {kind!r}; registered: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[kind]


def _validate(config: Any) -> None:
    """Refuse an unknown kind, too short a sequence, or settings any registered objective refuses."""
    objective_class(config.kind)
    if config.max_seq_len < MIN_SEQ_LEN:
        raise ValueError(f"max_seq_len must be at least {MIN_SEQ_LEN}, got {config.max_seq_len}")
    for settings in {cls.Settings for cls in OBJECTIVES.values()}:
        settings_from(settings, config)


def _settings_fields() -> list[tuple[str, Any, dataclasses.Field]]:
    """(name, type, field) of every registered Settings class; a name two objectives share must
    mean the same (same type and default)."""
    seen: dict[str, tuple[Any, Any]] = {}
    out = []
    for cls in OBJECTIVES.values():
        hints = typing.get_type_hints(cls.Settings)
        for f in dataclasses.fields(cls.Settings):
            key = (hints[f.name], f.default)
            if f.name in seen:
                if seen[f.name] != key:
                    raise TypeError(f"objective setting {f.name!r} is declared twice with different types/defaults")
                continue
            seen[f.name] = key
            out.append((f.name, hints[f.name], dataclasses.field(default=f.default)))
    return out


ObjectiveConfig = dataclasses.make_dataclass(
    "ObjectiveConfig",
    [("kind", str, dataclasses.field(default="mlm")), ("max_seq_len", int, dataclasses.field(default=128)),
     *_settings_fields()],
    kw_only=True,
    namespace={"__post_init__": _validate,
               "__doc__": "The `objective:` config block: kind, max_seq_len and every objective's settings."},
)
ObjectiveConfig.__module__ = __name__  # pickled by reference, like a class written out here


def make_objective(config: Any) -> Objective:
    """The objective `config.kind` names, holding its validated settings."""
    cls = objective_class(config.kind)
    return cls(config.max_seq_len, settings_from(cls.Settings, config))
