"""RoBERTa (Liu et al. 2019) in HF: BERT's layers, positions counted from pad_token_id + 1, an MLM
head with GELU hard-coded, a first-token MLP classifier."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, ConfigError, HFSource, optional_float, require
from lmforge.convert.families import bert_like
from lmforge.convert.families.heads import ENCODER_AS_DECODER, ENCODER_TASKS, TASKS, linear_head, mlm, mlp_head
from lmforge.convert.rules import KeyMap

RULES = KeyMap(
    backbone=bert_like.BERT_BACKBONE + bert_like.POOLER,
    heads={
        "mlm": mlm("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder", ("lm_head.bias", "lm_head.decoder.bias")),
        "classification": mlp_head("classifier.dense", "classifier.out_proj"),
        "multiple_choice": linear_head("classifier"),  # over RoBERTa's pooler
        **TASKS,
    },
)


def from_hf(src: HFSource) -> dict[str, Any]:
    pad = src.hf.get("pad_token_id")
    if pad is None:
        raise ConfigError(f"{src.where}: RoBERTa needs pad_token_id (its positions count from it)")
    return {**bert_like.fields_from_hf(src), **optional_float(src.hf, "classifier_dropout", "classifier_dropout"),
            "position_offset": pad + 1,
            **bert_like.pooler_fields(src, "pooler.dense.weight", first_token_fallback=False)}


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return {**bert_like.fields_to_hf(c), "classifier_dropout": c.classifier_dropout}


def check_exportable(c: ModelConfig) -> None:
    bert_like.check_encoder(c)
    require(c, num_blocks=c.num_layers, embedding_size=c.hidden_size, sinusoidal_positions=False,
            position_offset=(c.pad_token_id or 0) + 1, mlm_activation="gelu", classifier_activation="tanh")


ADAPTER = Adapter(
    model_type="roberta", family="roberta", class_prefix="Roberta", base_prefix="roberta", preset="roberta-base",
    architectures={"Model": (), "ForMaskedLM": ("mlm",), **ENCODER_TASKS},
    unsupported={"ForCausalLM": ENCODER_AS_DECODER},
    head_styles={"classification": "first_mlp", "multiple_choice": "pooler"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
)
