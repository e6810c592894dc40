"""HuggingFace `config.json` <-> `ModelConfig` + head specs, through the family's adapter.

What is common to every family lives here: the vocabulary, padding, init and tying fields, the
head specs read from `architectures`/`id2label`, the head-style check. The rest is the adapter's
(convert.families).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.config import PRESET_CLASSES, ModelConfig
from lmforge.convert.adapter import Adapter, ConfigError, HeadSpecs, HFSource
from lmforge.convert.families import adapter_for, adapter_of

__all__ = ["ConfigError", "HFModelInfo", "from_hf_config", "to_hf_config"]


@dataclass
class HFModelInfo:
    """What an HF config.json says, in our terms."""

    family: str
    architecture: str
    config: ModelConfig
    heads: HeadSpecs
    adapter: Adapter


def _labels(hf: dict[str, Any], where: str) -> tuple[int, list[str] | None]:
    id2label = hf.get("id2label")
    if id2label:
        try:
            items = sorted((int(k), str(v)) for k, v in id2label.items())
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: id2label keys must be integers, got {list(id2label)}") from None
        if [i for i, _ in items] != list(range(len(items))):
            raise ConfigError(f"{where}: id2label must number labels 0..n-1, got {[i for i, _ in items]}")
        names = [name for _, name in items]
        generic = names == [f"LABEL_{i}" for i in range(len(names))]
        return len(names), None if generic else names
    return int(hf.get("num_labels", 2)), None


def _heads(kinds: tuple[str, ...], hf: dict[str, Any], where: str) -> HeadSpecs:
    heads: HeadSpecs = {}
    for kind in kinds:
        spec: dict[str, Any] = {"kind": kind}
        if kind in ("classification", "token_classification"):
            problem = hf.get("problem_type")
            if problem == "multi_label_classification":
                raise ConfigError(f"{where}: problem_type 'multi_label_classification' is not supported "
                                  "(lmforge classifies single labels or regresses one value)")
            num_labels, names = _labels(hf, where)
            if kind == "classification" and problem == "regression" and num_labels != 1:
                raise ConfigError(f"{where}: regression with num_labels={num_labels}; lmforge regresses one value")
            spec.update(num_labels=num_labels, label_names=names)
        heads[kind] = spec
    return heads


def from_hf_config(hf: dict[str, Any], where: str = "config.json",
                   state_keys: set[str] | None = None) -> HFModelInfo:
    """Map an HF config dict. `state_keys` (the checkpoint's tensor names, prefix stripped) decides
    whether a BERT/RoBERTa/ALBERT pooler exists: HF drops it from some head classes."""
    adapter = adapter_for(hf, where)
    arch, kinds = adapter.architecture(hf, where)
    heads = _heads(kinds, hf, where)
    # the common fields, unless the family reads them its own way (T5's tying, its initializer_factor)
    fields = dict(vocab_size=hf["vocab_size"], pad_token_id=hf.get("pad_token_id"),
                  initializer_range=float(hf.get("initializer_range") or 0.02),
                  tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)))
    fields.update(adapter.from_hf(HFSource(hf, where, kinds, state_keys)))
    try:
        config = PRESET_CLASSES[adapter.preset].from_name(adapter.preset, **fields)  # XLNet: its own class
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return HFModelInfo(family=adapter.family, architecture=arch, config=config, heads=heads, adapter=adapter)


def _id2label(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec.get("num_labels") or 2
    names = spec.get("label_names") or [f"LABEL_{i}" for i in range(n)]
    return {"id2label": {str(i): name for i, name in enumerate(names)},
            "label2id": {name: i for i, name in enumerate(names)}}


def _check_head_styles(adapter: Adapter, config: ModelConfig, heads: HeadSpecs) -> None:
    """HF's sequence-level heads read the sequence one fixed way per family (pooler, first-token
    MLP, last token); a head of ours that reads it another way has no HF class."""
    for name, spec in heads.items():
        want = adapter.head_styles.get(spec["kind"])
        style = spec.get("style") or config.classifier_style
        if want is not None and style != want:
            raise ConfigError(f"head {name!r}: HF's {config.family} {spec['kind']} head reads the sequence as "
                              f"{want!r}, this one as {style!r}")
    adapter.check_heads(config, heads)


def to_hf_config(config: ModelConfig, heads: HeadSpecs) -> dict[str, Any]:
    """The HF config.json for a model with these heads (specs keyed by head name)."""
    adapter = adapter_of(config.family)
    adapter.check_exportable(config)
    arch = adapter.architecture_for(tuple(spec["kind"] for spec in heads.values()), config)
    hf: dict[str, Any] = {"architectures": [arch], "model_type": adapter.model_type,
                          "vocab_size": config.vocab_size, "initializer_range": config.initializer_range,
                          "pad_token_id": config.pad_token_id, "tie_word_embeddings": config.tie_word_embeddings}
    hf.update(adapter.to_hf(config))
    _check_head_styles(adapter, config, heads)
    for spec in heads.values():
        if spec["kind"] in ("classification", "token_classification"):
            hf.update(_id2label(spec))
            if spec["kind"] == "classification":
                hf["problem_type"] = ("regression" if spec.get("num_labels") == 1
                                      else "single_label_classification")
    return hf
