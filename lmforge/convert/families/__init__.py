"""The HF families lmforge converts, one module each, registered by HF `model_type`.

Adding a family is one module with an `ADAPTER` (see convert.adapter) and a line here.
"""

from __future__ import annotations

from typing import Any

from lmforge.convert.adapter import Adapter, ConfigError
from lmforge.convert.families import (
    albert,
    bert,
    distilbert,
    electra,
    gpt2,
    marian,
    openai_gpt,
    roberta,
    t5,
    xlnet,
)

ADAPTERS: dict[str, Adapter] = {m.ADAPTER.model_type: m.ADAPTER
                                for m in (bert, roberta, albert, electra, distilbert, openai_gpt, gpt2, marian, t5,
                                          xlnet)}
_BY_FAMILY: dict[str, Adapter] = {a.family: a for a in ADAPTERS.values()}


def adapter_for(hf: dict[str, Any], where: str) -> Adapter:
    """The adapter for an HF config.json (by its model_type)."""
    model_type = hf.get("model_type")
    if model_type not in ADAPTERS:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(ADAPTERS)}")
    return ADAPTERS[model_type]


def adapter_of(family: str) -> Adapter:
    """The adapter that exports lmforge models of `family`."""
    if family not in _BY_FAMILY:
        raise ConfigError(f"family {family!r} has no HF converter; converters: {', '.join(_BY_FAMILY)}")
    return _BY_FAMILY[family]
