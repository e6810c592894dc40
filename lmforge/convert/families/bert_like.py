"""What BERT, RoBERTa, ALBERT and ELECTRA share in HF: the config fields, the embeddings, BERT's layer
layout (RoBERTa and ELECTRA reuse it), the pooler; DistilBERT shares the encoder checks.

The family modules compose these and add their own fields and rules.
"""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import ACT_IN, ACT_OUT, HFSource, act, require
from lmforge.convert.rules import Rules, drop, fused, params, rename

L = "backbone.layers.{layer}"

EMBEDDINGS: Rules = (
    rename("embeddings.word_embeddings.weight", "backbone.embeddings.tok.weight")
    + rename("embeddings.position_embeddings.weight", "backbone.embeddings.pos.weight")
    + rename("embeddings.token_type_embeddings.weight", "backbone.embeddings.seg.weight", optional=True)
    + params("embeddings.LayerNorm", "backbone.embeddings.norm")
    + drop("embeddings.position_ids", "embeddings.token_type_ids")  # buffers of old transformers versions
)


def qkv(hf: str, names: tuple[str, str, str] = ("query", "key", "value")) -> Rules:
    """Our one qkv Linear from HF's three, `hf` the path holding them."""
    return fused(f"{L}.attn.qkv", tuple(f"{hf}.{n}" for n in names))


def bert_layers(hf: str) -> Rules:
    """BERT's layer layout, shared by RoBERTa and ELECTRA. `hf` is the layer's HF path."""
    return (
        qkv(f"{hf}.attention.self")
        + params(f"{hf}.attention.output.dense", f"{L}.attn.out")
        + params(f"{hf}.attention.output.LayerNorm", f"{L}.norm1")
        + params(f"{hf}.intermediate.dense", f"{L}.mlp.fc_in")
        + params(f"{hf}.output.dense", f"{L}.mlp.fc_out")
        + params(f"{hf}.output.LayerNorm", f"{L}.norm2")
    )


BERT_BACKBONE: Rules = EMBEDDINGS + bert_layers("encoder.layer.{layer}")
POOLER: Rules = params("pooler.dense", "backbone.pooler.dense", optional=True)  # HF drops it from some heads


def fields_from_hf(src: HFSource) -> dict[str, Any]:
    """The ModelConfig fields BERT's config names, as BERT, RoBERTa, ALBERT and ELECTRA spell them."""
    hf = src.hf
    src.reject(position_embedding_type=("absolute",), is_decoder=(False,), add_cross_attention=(False,))
    return dict(
        hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], activation=src.act(ACT_IN, "hidden_act", "gelu"),
        dropout=float(hf.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
    )


def pooler_fields(src: HFSource, key: str, first_token_fallback: bool) -> dict[str, Any]:
    """Whether the checkpoint has a pooler (`key` its weight): HF drops it from MLM/QA/tagging heads.
    With `first_token_fallback` (BERT, ALBERT) a later classifier then gets the pooler's dense+tanh
    as a fresh first-token MLP, which is what HF would initialise."""
    has_pooler = src.state_keys is None or key in src.state_keys
    if has_pooler or not first_token_fallback:
        return {"pooler": has_pooler}
    return {"pooler": False, "classifier_style": "first_mlp", "classifier_activation": "tanh"}


def fields_to_hf(c: ModelConfig) -> dict[str, Any]:
    return dict(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                intermediate_size=c.intermediate_size, hidden_act=act(ACT_OUT, c.activation, "export"),
                hidden_dropout_prob=c.dropout, attention_probs_dropout_prob=c.attention_dropout,
                max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                layer_norm_eps=c.layer_norm_eps, position_embedding_type="absolute")


def check_encoder(c: ModelConfig) -> None:
    """HF's encoders are post-LN, bidirectional, with a LayerNorm on the embeddings."""
    require(c, causal=False, norm_position="post", embedding_norm=True)
