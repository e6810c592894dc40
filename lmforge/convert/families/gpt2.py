"""GPT-2 (Radford et al. 2019) in HF: pre-LN causal decoder with a final LayerNorm `ln_f` (§2.3)."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import ACT_IN, ACT_OUT, Adapter, HFSource, act
from lmforge.convert.families import gpt_like
from lmforge.convert.families.heads import ENCODER_TASKS
from lmforge.convert.rules import KeyMap, params, rename

RULES = KeyMap(
    backbone=(rename("wte.weight", "backbone.embeddings.tok.weight")
              + rename("wpe.weight", "backbone.embeddings.pos.weight") + gpt_like.LAYERS
              + params("ln_f", "backbone.norm_f")),
    heads=gpt_like.HEADS,
)


def from_hf(src: HFSource) -> dict[str, Any]:
    src.reject(scale_attn_weights=(True,), scale_attn_by_inverse_layer_idx=(False,))
    return gpt_like.fields_from_hf(src, activation=src.act(ACT_IN, "activation_function", "gelu_new"),
                                   intermediate_size=src.hf.get("n_inner") or 4 * src.hf["n_embd"], positions=1024)


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return {**gpt_like.fields_to_hf(c), "n_inner": c.intermediate_size,
            "activation_function": act(ACT_OUT, c.activation, "export"), "scale_attn_weights": True,
            "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False}


def check_exportable(c: ModelConfig) -> None:
    gpt_like.check_decoder(c, norm_position="pre")


ADAPTER = Adapter(
    model_type="gpt2", family="gpt2", class_prefix="GPT2", base_prefix="transformer", preset="gpt2",
    architectures={"Model": (), "LMHeadModel": ("clm",),
                   **{k: v for k, v in ENCODER_TASKS.items() if k != "ForMultipleChoice"}},
    unsupported={"DoubleHeadsModel": gpt_like.DOUBLE_HEADS},
    head_styles={"classification": "last_token"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
)
