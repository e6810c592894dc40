"""What OpenAI GPT and GPT-2 share in HF: the `n_embd`/`n_layer` config fields, Conv1D layers stored
(in, out) with q|k|v already fused in `c_attn`, and the LM / classification heads."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import HFSource, optional_float, require
from lmforge.convert.families.bert_like import L
from lmforge.convert.families.heads import TASKS, H
from lmforge.convert.rules import Rules, drop, params, rename
from lmforge.convert.transforms import TRANSPOSE


def _conv1d(hf: str, ours: str) -> Rules:
    return params(hf, ours, weight=TRANSPOSE)  # Conv1D (in, out) -> Linear (out, in)


LAYERS: Rules = (
    _conv1d("h.{layer}.attn.c_attn", f"{L}.attn.qkv")  # (H, 3H): q|k|v already fused
    + _conv1d("h.{layer}.attn.c_proj", f"{L}.attn.out")
    + params("h.{layer}.ln_1", f"{L}.norm1")
    + _conv1d("h.{layer}.mlp.c_fc", f"{L}.mlp.fc_in")
    + _conv1d("h.{layer}.mlp.c_proj", f"{L}.mlp.fc_out")
    + params("h.{layer}.ln_2", f"{L}.norm2")
    + drop("h.{layer}.attn.bias", "h.{layer}.attn.masked_bias")  # causal-mask buffers of old checkpoints
)
HEADS: dict[str, Rules] = {
    "clm": rename("lm_head.weight", f"{H}.decoder.weight"),
    "classification": rename("score.weight", f"{H}.out.weight"),
    **TASKS,
}
DOUBLE_HEADS = ("the LM + multiple-choice head reads the token at `mc_token_ids`, which lmforge's "
                "multiple-choice head does not take; convert the LMHeadModel part instead")


def fields_from_hf(src: HFSource, activation: str, intermediate_size: int, positions: int) -> dict[str, Any]:
    hf = src.hf
    src.reject(add_cross_attention=(False,))
    return dict(
        hidden_size=hf["n_embd"], num_layers=hf["n_layer"], num_heads=hf["n_head"],
        intermediate_size=intermediate_size, activation=activation,
        max_position_embeddings=hf.get("n_positions", positions),
        dropout=float(hf.get("resid_pdrop", 0.1)), attention_dropout=float(hf.get("attn_pdrop", 0.1)),
        layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        **optional_float(hf, "classifier_dropout", "classifier_dropout"),
    )


def fields_to_hf(c: ModelConfig) -> dict[str, Any]:
    return dict(n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads, n_positions=c.max_position_embeddings,
                resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.attention_dropout,
                layer_norm_epsilon=c.layer_norm_eps, classifier_dropout=c.classifier_dropout)


def check_decoder(c: ModelConfig, norm_position: str) -> None:
    require(c, position_offset=0, sinusoidal_positions=False, causal=True, embedding_norm=False, type_vocab_size=0,
            pooler=False, embedding_size=c.hidden_size, num_blocks=c.num_layers, norm_position=norm_position)
