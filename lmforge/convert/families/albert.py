"""ALBERT (Lan et al. 2020) in HF: factorised embeddings projected to the hidden size, layers sharing
one block per group (§3.1; `{layer}` ranges over the groups), an SOP head."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, HFSource, require
from lmforge.convert.families import bert_like
from lmforge.convert.families.bert_like import L
from lmforge.convert.families.heads import ENCODER_TASKS, TASKS, linear_head, mlm
from lmforge.convert.rules import KeyMap, params

_LAYER = "encoder.albert_layer_groups.{layer}.albert_layers.0"  # inner_group_num == 1

RULES = KeyMap(
    backbone=(
        bert_like.EMBEDDINGS
        + params("encoder.embedding_hidden_mapping_in", "backbone.embeddings.proj", optional=True)
        + bert_like.qkv(f"{_LAYER}.attention")
        + params(f"{_LAYER}.attention.dense", f"{L}.attn.out")
        + params(f"{_LAYER}.attention.LayerNorm", f"{L}.norm1")
        + params(f"{_LAYER}.ffn", f"{L}.mlp.fc_in")
        + params(f"{_LAYER}.ffn_output", f"{L}.mlp.fc_out")
        + params(f"{_LAYER}.full_layer_layer_norm", f"{L}.norm2")
        + params("pooler", "backbone.pooler.dense", optional=True)
    ),
    heads={
        "mlm": mlm("predictions.dense", "predictions.LayerNorm", "predictions.decoder",
                   ("predictions.bias", "predictions.decoder.bias")),
        "sop": linear_head("sop_classifier.classifier"),
        "classification": linear_head("classifier"),
        "multiple_choice": linear_head("classifier"),
        **TASKS,
    },
)


def from_hf(src: HFSource) -> dict[str, Any]:
    fields = bert_like.fields_from_hf(src)
    src.reject(inner_group_num=(1,))
    hf = src.hf
    return {**fields, "embedding_size": hf.get("embedding_size", 128),
            "num_layer_groups": hf.get("num_hidden_groups", 1),
            "classifier_dropout": float(hf.get("classifier_dropout_prob", 0.1)),
            **bert_like.pooler_fields(src, "pooler.weight", first_token_fallback=True)}


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return {**bert_like.fields_to_hf(c), "embedding_size": c.embedding_size, "num_hidden_groups": c.num_blocks,
            "inner_group_num": 1, "classifier_dropout_prob": c.classifier_dropout}


def check_exportable(c: ModelConfig) -> None:
    bert_like.check_encoder(c)
    require(c, position_offset=0, sinusoidal_positions=False, mlm_activation=c.activation)


ADAPTER = Adapter(
    model_type="albert", family="albert", class_prefix="Albert", base_prefix="albert", preset="albert-base-v2",
    architectures={"Model": (), "ForPreTraining": ("mlm", "sop"), "ForMaskedLM": ("mlm",), **ENCODER_TASKS},
    head_styles={"classification": "pooler", "multiple_choice": "pooler"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
)
