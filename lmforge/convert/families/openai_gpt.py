"""OpenAI GPT (Radford et al. 2018) in HF: post-LN causal decoder, inner size fixed at 4x, and an
`afn` "gelu" that is the tanh approximation (modeling_openai.ACT_FNS)."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import Adapter, HFSource, act, require
from lmforge.convert.families import gpt_like
from lmforge.convert.rules import KeyMap, drop, rename

_ACT_IN = {"gelu": "gelu_tanh", "relu": "relu"}
_ACT_OUT = {"gelu_tanh": "gelu", "relu": "relu"}

RULES = KeyMap(
    backbone=(rename("tokens_embed.weight", "backbone.embeddings.tok.weight")
              + rename("positions_embed.weight", "backbone.embeddings.pos.weight")
              + drop("position_ids") + gpt_like.LAYERS),
    heads={k: v for k, v in gpt_like.HEADS.items() if k in ("clm", "classification")},
)


def from_hf(src: HFSource) -> dict[str, Any]:
    return gpt_like.fields_from_hf(src, activation=src.act(_ACT_IN, "afn", "gelu"),
                                   intermediate_size=4 * src.hf["n_embd"], positions=512)


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return {**gpt_like.fields_to_hf(c), "afn": act(_ACT_OUT, c.activation, "export")}


def check_exportable(c: ModelConfig) -> None:
    gpt_like.check_decoder(c, norm_position="post")
    require(c, intermediate_size=4 * c.hidden_size)


ADAPTER = Adapter(
    model_type="openai-gpt", family="openai-gpt", class_prefix="OpenAIGPT", base_prefix="transformer",
    preset="openai-gpt",
    architectures={"Model": (), "LMHeadModel": ("clm",), "ForSequenceClassification": ("classification",)},
    unsupported={"DoubleHeadsModel": gpt_like.DOUBLE_HEADS},
    head_styles={"classification": "last_token"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
)
