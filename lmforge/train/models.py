"""Which model a pre-training objective trains: the backbone preset plus the objective's heads."""

from __future__ import annotations

from typing import Any

from torch import nn

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.objectives.electra import ElectraModel, generator_config
from lmforge.train.config import PretrainConfig

# BERT §3.1 (MLM + NSP), RoBERTa §4 (MLM only), ALBERT §4.2 (MLM + SOP), GPT (CLM)
OBJECTIVE_HEADS: dict[str, dict[str, dict[str, Any]]] = {
    "mlm": {"mlm": {"kind": "mlm"}},
    "mlm_nsp": {"mlm": {"kind": "mlm"}, "nsp": {"kind": "nsp"}},
    "mlm_sop": {"mlm": {"kind": "mlm"}, "sop": {"kind": "sop"}},
    "clm": {"lm": {"kind": "clm"}},
}


def model_config(config: PretrainConfig, vocab_size: int, pad_token_id: int | None) -> ModelConfig:
    """The preset, with the vocabulary and padding id of the tokenizer the data was prepared with."""
    base = ModelConfig.from_name(config.model.preset)
    fields: dict[str, Any] = {"vocab_size": vocab_size}
    if base.pad_token_id is not None and pad_token_id is not None:
        fields["pad_token_id"] = pad_token_id
        if base.position_offset:  # RoBERTa positions start after the padding id
            fields["position_offset"] = pad_token_id + 1
    fields.update(config.model.overrides)
    model = ModelConfig.from_name(config.model.preset, **fields)
    kind = config.objective.kind
    if kind == "clm" and not model.causal:
        raise ValueError(f"objective clm needs a causal preset (gpt2-mini, gpt2, ...), got {config.model.preset!r}")
    if kind != "clm" and model.causal:
        raise ValueError(f"objective {kind} needs an encoder preset, got causal {config.model.preset!r}")
    needed = config.objective.max_seq_len + model.position_offset
    if needed > model.max_position_embeddings:
        raise ValueError(f"objective.max_seq_len {config.objective.max_seq_len} needs {needed} positions; "
                         f"model has max_position_embeddings={model.max_position_embeddings}")
    if kind in ("mlm_nsp", "mlm_sop") and model.type_vocab_size < 2:
        raise ValueError(f"objective {kind} uses two segments; model type_vocab_size is {model.type_vocab_size}")
    return model


def build_pretraining_model(config: PretrainConfig, vocab_size: int,
                            pad_token_id: int | None) -> tuple[nn.Module, dict[str, TaskModel]]:
    """The module the loop calls (`module(**batch).loss`) and the models saved from it, by sub-dir."""
    backbone = model_config(config, vocab_size, pad_token_id)
    if config.objective.kind == "electra":
        gen = generator_config(backbone, config.electra.generator_size, **config.electra.generator_overrides)
        electra = ElectraModel(backbone, gen, config.electra.disc_weight)
        return electra, electra.submodels()
    model = TaskModel(backbone, OBJECTIVE_HEADS[config.objective.kind])
    return model, {"": model}
