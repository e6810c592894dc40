"""Marian (HF `MarianMTModel` / `MarianModel`): the original encoder-decoder Transformer of Vaswani et al.
2017 — post-LN layers, sinusoidal positions with sin in the first half of the dims and cos in the second
(recomputed, never stored: HF drops them on save, and `MarianModel` checkpoints that keep them are read
past), token embeddings optionally scaled by sqrt(d_model), one token table for encoder, decoder and the
output projection, and a vocabulary bias `final_logits_bias` (a (1, V) buffer in HF, our head's bias).

HF lets the encoder and decoder differ in heads, FFN width and vocabulary; lmforge builds one of each,
so a checkpoint where they differ is refused rather than converted into another model, and the token
tables HF may store under three names (`shared`, `encoder.`/`decoder.embed_tokens`) must be equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, ConfigError, HFSource, act, require
from lmforge.convert.rules import KeyMap, Rules, drop, fused, params, rename

ENC, DEC = "backbone.encoder.layers.{enc}", "backbone.decoder.layers.{dec}"
H = "heads.{head}"

# HF's ACT2FN names -> ours ("swish" is what the released opus-mt models use); export writes the first
_ACT_IN = {"relu": "relu", "swish": "silu", "silu": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh"}
_ACT_OUT = {"relu": "relu", "silu": "swish", "gelu": "gelu", "gelu_tanh": "gelu_new"}


@dataclass(frozen=True)
class RowVector:
    """HF's (1, V) `final_logits_bias` buffer <-> our head's (V,) bias."""

    name: str = "row_vector"
    many: bool = False

    def to_ours(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        tensor = parts[0]
        if tensor.dim() != 2 or tensor.shape[0] != 1:
            raise ValueError(f"shape {tuple(tensor.shape)} is not a (1, V) row")
        return tensor[0]

    def to_hf(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        return [tensor[None, :]]  # (1, V)


def _self_attention(hf: str, ours: str) -> Rules:
    return (fused(f"{ours}.attn.qkv", tuple(f"{hf}.self_attn.{p}_proj" for p in "qkv"))
            + params(f"{hf}.self_attn.out_proj", f"{ours}.attn.out")
            + params(f"{hf}.self_attn_layer_norm", f"{ours}.norm1"))


def _feed_forward(hf: str, ours: str) -> Rules:
    return (params(f"{hf}.fc1", f"{ours}.mlp.fc_in") + params(f"{hf}.fc2", f"{ours}.mlp.fc_out")
            + params(f"{hf}.final_layer_norm", f"{ours}.norm2"))


def _cross_attention(hf: str, ours: str) -> Rules:
    """Our cross-attention projects q alone and k|v fused (both read the encoder's states)."""
    return (params(f"{hf}.encoder_attn.q_proj", f"{ours}.cross_attn.q")
            + fused(f"{ours}.cross_attn.kv", (f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"))
            + params(f"{hf}.encoder_attn.out_proj", f"{ours}.cross_attn.out")
            + params(f"{hf}.encoder_attn_layer_norm", f"{ours}.norm_cross"))


_TABLE = "backbone.encoder.embeddings.tok.weight"
RULES = KeyMap(
    backbone=(
        rename("shared.weight", _TABLE)
        + rename("encoder.embed_tokens.weight", _TABLE)  # aliases HF may store: they must agree
        + rename("decoder.embed_tokens.weight", _TABLE)
        + drop("encoder.embed_positions.weight", "decoder.embed_positions.weight")  # fixed sinusoids
        + _self_attention("encoder.layers.{enc}", ENC) + _feed_forward("encoder.layers.{enc}", ENC)
        + _self_attention("decoder.layers.{dec}", DEC) + _cross_attention("decoder.layers.{dec}", DEC)
        + _feed_forward("decoder.layers.{dec}", DEC)
    ),
    heads={"seq2seq_lm": rename("lm_head.weight", f"{H}.decoder.weight")
           + rename("final_logits_bias", f"{H}.bias", RowVector())},
)


def ranges(config: ModelConfig) -> dict[str, int]:
    return {"enc": config.num_layers, "dec": config.num_decoder_layers}


def _same(hf: dict[str, Any], where: str, encoder: str, decoder: str) -> Any:
    """A size HF keeps per stack, which lmforge keeps once."""
    if encoder not in hf:
        raise ConfigError(f"{where}: no {encoder!r}")
    if hf.get(decoder, hf[encoder]) != hf[encoder]:
        raise ConfigError(f"{where}: {encoder}={hf[encoder]!r} but {decoder}={hf[decoder]!r}; lmforge builds "
                          "the encoder and decoder with one value")
    return hf[encoder]


def from_hf(src: HFSource) -> dict[str, Any]:
    hf, where = src.hf, src.where
    src.reject(share_encoder_decoder_embeddings=(True,), activation_dropout=(0.0, 0), encoder_layerdrop=(0.0, 0),
               decoder_layerdrop=(0.0, 0), is_decoder=(False,))
    if hf.get("decoder_vocab_size") not in (None, hf["vocab_size"]):
        raise ConfigError(f"{where}: decoder_vocab_size={hf['decoder_vocab_size']} differs from vocab_size="
                          f"{hf['vocab_size']}; lmforge shares one vocabulary (Vaswani et al. §3.4)")
    return dict(
        hidden_size=hf["d_model"], num_layers=hf["encoder_layers"], num_decoder_layers=hf["decoder_layers"],
        num_heads=_same(hf, where, "encoder_attention_heads", "decoder_attention_heads"),
        intermediate_size=_same(hf, where, "encoder_ffn_dim", "decoder_ffn_dim"),
        activation=src.act(_ACT_IN, "activation_function", "gelu"),
        dropout=float(hf.get("dropout", 0.1)), attention_dropout=float(hf.get("attention_dropout", 0.0)),
        max_position_embeddings=hf.get("max_position_embeddings", 1024),
        scale_embeddings=bool(hf.get("scale_embedding", False)),
        decoder_start_token_id=hf.get("decoder_start_token_id"),
    )


def to_hf(c: ModelConfig) -> dict[str, Any]:
    """`forced_eos_token_id` is written as None: lmforge's generate forces nothing, and the transformers
    default (0) would force token 0 at the length limit. bos/eos come from the tokenizer on export."""
    return dict(
        d_model=c.hidden_size, encoder_layers=c.num_layers, decoder_layers=c.num_decoder_layers,
        encoder_attention_heads=c.num_heads, decoder_attention_heads=c.num_heads,
        encoder_ffn_dim=c.intermediate_size, decoder_ffn_dim=c.intermediate_size,
        activation_function=act(_ACT_OUT, c.activation, "export"), dropout=c.dropout,
        attention_dropout=c.attention_dropout, activation_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
        max_position_embeddings=c.max_position_embeddings, scale_embedding=c.scale_embeddings,
        share_encoder_decoder_embeddings=True, decoder_vocab_size=c.vocab_size,
        decoder_start_token_id=c.decoder_start_id, init_std=c.initializer_range, is_encoder_decoder=True,
        eos_token_id=None, forced_eos_token_id=None,
    )


def check_exportable(c: ModelConfig) -> None:
    """Besides the layout: the output projection tied to the table. transformers (5.x) unties the encoder
    and decoder tables from `shared` too when `tie_word_embeddings` is False, a model lmforge does not build."""
    if not c.num_decoder_layers:
        raise ConfigError("a Marian model is an encoder-decoder: num_decoder_layers must be > 0")
    require(c, norm_position="post", embedding_norm=False, causal=False, pooler=False, type_vocab_size=0,
            position_offset=0, sinusoidal_positions=True, sinusoidal_layout="halves", embedding_size=c.hidden_size,
            num_blocks=c.num_layers, layer_norm_eps=1e-5, tie_word_embeddings=True)


ADAPTER = Adapter(
    model_type="marian", family="marian", class_prefix="Marian", base_prefix="model", preset="transformer-base",
    architectures={"Model": (), "MTModel": ("seq2seq_lm",)},
    unsupported={"ForCausalLM": "a Marian decoder without its encoder is not a model lmforge builds"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable, ranges=ranges,
)
