"""DistilBERT (Sanh et al. 2019) in HF: BERT's encoder without segment embeddings or pooler, its own
field names (`dim`, `n_layers` ...), LayerNorm eps fixed at 1e-12, optional sinusoidal positions."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, HFSource, act, require
from lmforge.convert.families import bert_like
from lmforge.convert.families.bert_like import L
from lmforge.convert.families.heads import ENCODER_TASKS, TASKS, mlm, mlp_head
from lmforge.convert.rules import KeyMap, drop, params, rename

_ACT = {"gelu": "gelu", "relu": "relu"}  # same names both ways
_LAYER = "transformer.layer.{layer}"

RULES = KeyMap(
    backbone=(
        rename("embeddings.word_embeddings.weight", "backbone.embeddings.tok.weight")
        + rename("embeddings.position_embeddings.weight", "backbone.embeddings.pos.weight")
        + params("embeddings.LayerNorm", "backbone.embeddings.norm")
        + drop("embeddings.position_ids")
        + bert_like.qkv(f"{_LAYER}.attention", ("q_lin", "k_lin", "v_lin"))
        + params(f"{_LAYER}.attention.out_lin", f"{L}.attn.out")
        + params(f"{_LAYER}.sa_layer_norm", f"{L}.norm1")
        + params(f"{_LAYER}.ffn.lin1", f"{L}.mlp.fc_in")
        + params(f"{_LAYER}.ffn.lin2", f"{L}.mlp.fc_out")
        + params(f"{_LAYER}.output_layer_norm", f"{L}.norm2")
    ),
    heads={
        "mlm": mlm("vocab_transform", "vocab_layer_norm", "vocab_projector", ("vocab_projector.bias",)),
        "classification": mlp_head("pre_classifier", "classifier"),
        "multiple_choice": mlp_head("pre_classifier", "classifier"),
        **TASKS,
    },
)


def from_hf(src: HFSource) -> dict[str, Any]:
    hf = src.hf
    return dict(
        hidden_size=hf["dim"], num_layers=hf["n_layers"], num_heads=hf["n_heads"], intermediate_size=hf["hidden_dim"],
        activation=src.act(_ACT, "activation", "gelu"), dropout=float(hf.get("dropout", 0.1)),
        attention_dropout=float(hf.get("attention_dropout", 0.1)),
        classifier_dropout=float(hf.get("seq_classif_dropout", 0.2)),
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        sinusoidal_positions=bool(hf.get("sinusoidal_pos_embds", False)),
    )


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return dict(dim=c.hidden_size, n_layers=c.num_layers, n_heads=c.num_heads, hidden_dim=c.intermediate_size,
                activation=act(_ACT, c.activation, "export"), dropout=c.dropout,
                attention_dropout=c.attention_dropout, seq_classif_dropout=c.classifier_dropout, qa_dropout=c.dropout,
                max_position_embeddings=c.max_position_embeddings, sinusoidal_pos_embds=c.sinusoidal_positions)


def check_exportable(c: ModelConfig) -> None:
    bert_like.check_encoder(c)
    require(c, num_blocks=c.num_layers, embedding_size=c.hidden_size, position_offset=0,
            mlm_activation=c.activation, type_vocab_size=0, pooler=False, layer_norm_eps=1e-12,
            classifier_activation="relu")


ADAPTER = Adapter(
    model_type="distilbert", family="distilbert", class_prefix="DistilBert", base_prefix="distilbert",
    preset="distilbert-base-uncased",
    architectures={"Model": (), "ForMaskedLM": ("mlm",), **ENCODER_TASKS},
    head_styles={"classification": "first_mlp", "multiple_choice": "first_mlp"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
)
