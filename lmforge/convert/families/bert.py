"""BERT (Devlin et al. 2019) as HF's transformers stores it: BertModel, BertForPreTraining, ..."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, HFSource, optional_float, require
from lmforge.convert.families import bert_like
from lmforge.convert.families.heads import ENCODER_AS_DECODER, ENCODER_TASKS, TASKS, linear_head, mlm
from lmforge.convert.rules import KeyMap

RULES = KeyMap(
    backbone=bert_like.BERT_BACKBONE + bert_like.POOLER,
    heads={
        "mlm": mlm("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                   "cls.predictions.decoder", ("cls.predictions.bias", "cls.predictions.decoder.bias")),
        "nsp": linear_head("cls.seq_relationship"),
        "classification": linear_head("classifier"),
        "multiple_choice": linear_head("classifier"),
        **TASKS,
    },
)


def from_hf(src: HFSource) -> dict[str, Any]:
    return {**bert_like.fields_from_hf(src), **optional_float(src.hf, "classifier_dropout", "classifier_dropout"),
            **bert_like.pooler_fields(src, "pooler.dense.weight", first_token_fallback=True)}


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return {**bert_like.fields_to_hf(c), "classifier_dropout": c.classifier_dropout}


def check_exportable(c: ModelConfig) -> None:
    bert_like.check_encoder(c)
    require(c, num_blocks=c.num_layers, embedding_size=c.hidden_size, position_offset=0,
            sinusoidal_positions=False, mlm_activation=c.activation)


ADAPTER = Adapter(
    model_type="bert", family="bert", class_prefix="Bert", base_prefix="bert", preset="bert-base-uncased",
    architectures={"Model": (), "ForPreTraining": ("mlm", "nsp"), "ForMaskedLM": ("mlm",),
                   "ForNextSentencePrediction": ("nsp",), **ENCODER_TASKS},
    unsupported={"LMHeadModel": "BERT used as a causal decoder (is_decoder=True) is not a model lmforge builds",
                 "ForCausalLM": ENCODER_AS_DECODER},
    head_styles={"classification": "pooler", "multiple_choice": "pooler"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
)
