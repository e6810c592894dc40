"""T5 (HF `T5Model`, `T5ForConditionalGeneration`, `T5EncoderModel`): Raffel et al. 2020, v1.0 and v1.1.

HF's layout: each block is a list of sublayers (`layer.0` self-attention, `layer.1` cross-attention in the
decoder, then the feed-forward), q/k/v/o without biases (ours fuses q|k|v, and k|v in cross-attention),
`DenseReluDense.wi/wo` (v1.0) or `wi_0/wi_1/wo` (v1.1 gated), RMS norms `layer_norm` and a stack's
`final_layer_norm`. The relative-position table lives in the first block's self-attention and is shared by
every layer of that stack: ours is held by the stack (`relative_bias`), so the rule is pinned to layer 0.
HF head models keep the backbone without a prefix (`shared`, `encoder.`, `decoder.`, `lm_head`).

Tying and output scaling: released v1.0 checkpoints tie `lm_head` to `shared` and scale the decoder output
by d_model^-0.5; v1.1 ones set `tie_word_embeddings: false` (untied head, no scaling). transformers 5 reads
that flag as `scale_decoder_outputs` and ties unless the file stores a different `lm_head.weight`; so on
import the head is untied when the config says so or when a non-scaling model stores its own `lm_head`, and
export writes both flags explicitly.
"""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, ConfigError, HFSource, require
from lmforge.convert.rules import KeyMap, Rules, fused, rename

_ACT_IN = {"relu": "relu", "gelu": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _attention(hf: str, ours: str, cross: bool) -> Rules:
    if cross:
        qkv = (rename(f"{hf}.q.weight", f"{ours}.q.weight")
               + fused(f"{ours}.kv", (f"{hf}.k", f"{hf}.v"), bias=False))
    else:
        qkv = fused(f"{ours}.qkv", tuple(f"{hf}.{p}" for p in "qkv"), bias=False)
    return qkv + rename(f"{hf}.o.weight", f"{ours}.out.weight")


def _feed_forward(hf: str, ours: str, gated: bool) -> Rules:
    if gated:
        rules = rename(f"{hf}.wi_0.weight", f"{ours}.fc_in.weight") + rename(f"{hf}.wi_1.weight", f"{ours}.fc_up.weight")
    else:
        rules = rename(f"{hf}.wi.weight", f"{ours}.fc_in.weight")
    return rules + rename(f"{hf}.wo.weight", f"{ours}.fc_out.weight")


def _stack(hf: str, ours: str, index: str, gated: bool, cross: bool) -> Rules:
    """One T5Stack: blocks, the shared relative-position table (block 0), the final norm."""
    block, layer = f"{hf}.block.{{{index}}}.layer", f"{ours}.layers.{{{index}}}"
    ff = 2 if cross else 1
    rules = (_attention(f"{block}.0.SelfAttention", f"{layer}.attn", cross=False)
             + rename(f"{block}.0.layer_norm.weight", f"{layer}.norm1.weight")
             + rename(f"{block}.0.SelfAttention.relative_attention_bias.weight", f"{ours}.relative_bias.weight",
                      at={index: 0})
             + _feed_forward(f"{block}.{ff}.DenseReluDense", f"{layer}.mlp", gated)
             + rename(f"{block}.{ff}.layer_norm.weight", f"{layer}.norm2.weight")
             + rename(f"{hf}.final_layer_norm.weight", f"{ours}.norm_f.weight"))
    if cross:
        rules += (_attention(f"{block}.1.EncDecAttention", f"{layer}.cross_attn", cross=True)
                  + rename(f"{block}.1.layer_norm.weight", f"{layer}.norm_cross.weight"))
    return rules


def key_map(config: ModelConfig) -> KeyMap:
    """An encoder-decoder, or the encoder alone (`T5EncoderModel`: our plain Backbone)."""
    gated = config.gated_ffn
    if not config.num_decoder_layers:
        table = "backbone.embeddings.tok.weight"
        return KeyMap(backbone=rename("shared.weight", table) + rename("encoder.embed_tokens.weight", table)
                      + _stack("encoder", "backbone", "enc", gated, cross=False))
    table = "backbone.encoder.embeddings.tok.weight"
    backbone = (rename("shared.weight", table) + rename("encoder.embed_tokens.weight", table)
                + rename("decoder.embed_tokens.weight", table)
                + _stack("encoder", "backbone.encoder", "enc", gated, cross=False)
                + _stack("decoder", "backbone.decoder", "dec", gated, cross=True))
    return KeyMap(backbone=backbone, heads={"seq2seq_lm": rename("lm_head.weight", "heads.{head}.decoder.weight")})


def ranges(config: ModelConfig) -> dict[str, int]:
    return {"enc": config.num_layers, "dec": config.num_decoder_layers}


def from_hf(src: HFSource) -> dict[str, Any]:
    hf, where = src.hf, src.where
    missing = [key for key in ("d_model", "d_ff", "num_layers", "num_heads") if key not in hf]
    if missing:
        raise ConfigError(f"{where}: a T5 config needs {missing}")
    proj = str(hf.get("feed_forward_proj", "relu"))
    gated = proj.startswith("gated-")
    act = proj.removeprefix("gated-")
    if act not in _ACT_IN or (act == "gelu" and not gated):
        raise ConfigError(f"{where}: feed_forward_proj={proj!r} is not supported (supported: relu, gated-gelu)")
    src.reject(is_decoder=(False,))
    encoder_only = (hf.get("architectures") or [""])[0] == "T5EncoderModel"
    tied = hf.get("tie_word_embeddings", True) is not False
    scale = bool(hf.get("scale_decoder_outputs", tied))
    if tied and not scale and src.state_keys is not None and "lm_head.weight" in src.state_keys:
        tied = False  # transformers 5 stores lm_head only when it differs from the token table
    dropout = float(hf.get("dropout_rate", 0.1))
    return dict(
        hidden_size=hf["d_model"], num_layers=hf["num_layers"],
        num_decoder_layers=0 if encoder_only else hf.get("num_decoder_layers") or hf["num_layers"],
        num_heads=hf["num_heads"], attention_head_size=hf.get("d_kv", 64), intermediate_size=hf["d_ff"],
        relative_attention_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        gated_ffn=gated, activation=_ACT_IN[act], layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-6)),
        dropout=dropout, attention_dropout=dropout, ffn_dropout=dropout,
        output_scale=scale, tie_word_embeddings=tied,
        initializer_range=float(hf.get("initializer_factor", 1.0)),
        decoder_start_token_id=hf.get("decoder_start_token_id"),
    )


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return dict(
        d_model=c.hidden_size, d_kv=c.head_dim, d_ff=c.intermediate_size, num_layers=c.num_layers,
        num_decoder_layers=c.num_decoder_layers or c.num_layers, num_heads=c.num_heads,
        relative_attention_num_buckets=c.relative_attention_buckets,
        relative_attention_max_distance=c.relative_attention_max_distance, dropout_rate=c.dropout,
        layer_norm_epsilon=c.layer_norm_eps, initializer_factor=c.initializer_range,
        feed_forward_proj=("gated-" if c.gated_ffn else "") + {"relu": "relu", "gelu_tanh": "gelu"}[c.activation],
        is_encoder_decoder=bool(c.num_decoder_layers), scale_decoder_outputs=c.output_scale,
        decoder_start_token_id=c.decoder_start_id, eos_token_id=None,
    )


def check_exportable(c: ModelConfig) -> None:
    require(c, norm_position="pre", norm="rms", bias=False, final_dropout=True, embedding_norm=False,
            absolute_positions=False,
            scale_embeddings=False, causal=False, pooler=False, type_vocab_size=0, embedding_size=c.hidden_size,
            num_blocks=c.num_layers, attention_scale=1.0)
    if not c.relative_attention_buckets:
        raise ConfigError("T5 in HF requires a relative position bias (relative_attention_buckets > 0)")
    if c.activation not in ("relu", "gelu_tanh") or (c.activation == "gelu_tanh") != c.gated_ffn:
        raise ConfigError(f"T5 in HF has a ReLU or a gated tanh-GELU feed-forward; this model has "
                          f"activation={c.activation!r}, gated_ffn={c.gated_ffn}")
    if len({c.dropout, c.attention_dropout, c.ffn_dropout}) != 1:
        raise ConfigError("T5 in HF has one dropout_rate; this model's dropout, attention_dropout and "
                          "ffn_dropout differ")


ADAPTER = Adapter(
    model_type="t5", family="t5", class_prefix="T5", base_prefix="", preset="t5-small",
    architectures={"Model": (), "ForConditionalGeneration": ("seq2seq_lm",)},
    encoder_architectures={"EncoderModel": ()},
    unsupported={"ForSequenceClassification": "lmforge fine-tunes T5 text to text (lmforge finetune --task)",
                 "ForTokenClassification": "lmforge fine-tunes T5 text to text",
                 "ForQuestionAnswering": "lmforge fine-tunes T5 text to text"},
    rules=key_map, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable, ranges=ranges,
)
