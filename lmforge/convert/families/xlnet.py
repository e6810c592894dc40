"""XLNet (Yang et al. 2019) in HF: its own backbone (lmforge.models.xlnet), q/k/v/o/r stored per head
as (d_model, n_head, d_head) parameters without biases, the LM head `lm_loss` tied to the token
table, and a "last token" sequence summary (dense + tanh) for classification and multiple choice."""

from __future__ import annotations

from typing import Any

from lmforge.convert.adapter import ACT_IN, ACT_OUT, Adapter, ConfigError, HFSource, act
from lmforge.convert.families.heads import H, linear_head, mlp_head
from lmforge.convert.rules import KeyMap, Rules, params, rename
from lmforge.convert.transforms import SplitHeads
from lmforge.xlnet_config import XLNetConfig

L = "backbone.layers.{layer}"
_HF = "layer.{layer}"
_SUMMARY = mlp_head("sequence_summary.summary", "logits_proj")


def rules(c: XLNetConfig) -> KeyMap:
    """q, k, v, r: HF (d_model, n, d) = a Linear's (in, out) with the out dim split into heads; o:
    HF (d_model, n, d) = a Linear's (out, in) with the in dim split."""
    into_heads = SplitHeads(c.num_heads, transpose=True)
    attn: Rules = ()
    for name in ("q", "k", "v", "r"):
        attn += rename(f"{_HF}.rel_attn.{name}", f"{L}.attn.{name}.weight", into_heads)
    attn += rename(f"{_HF}.rel_attn.o", f"{L}.attn.o.weight", SplitHeads(c.num_heads))
    for name in ("r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
        attn += rename(f"{_HF}.rel_attn.{name}", f"{L}.attn.{name}")
    backbone = (
        rename("word_embedding.weight", "backbone.embeddings.tok.weight")
        + rename("mask_emb", "backbone.mask_emb")
        + attn
        + params(f"{_HF}.rel_attn.layer_norm", f"{L}.attn.norm")
        + params(f"{_HF}.ff.layer_1", f"{L}.mlp.fc_in")
        + params(f"{_HF}.ff.layer_2", f"{L}.mlp.fc_out")
        + params(f"{_HF}.ff.layer_norm", f"{L}.norm")
    )
    heads = {
        "plm": rename("lm_loss.weight", f"{H}.decoder.weight") + rename("lm_loss.bias", f"{H}.bias"),
        "classification": _SUMMARY,
        "multiple_choice": _SUMMARY,
        "token_classification": linear_head("classifier"),
        "qa": linear_head("qa_outputs"),
    }
    return KeyMap(backbone=backbone, heads=heads)


def from_hf(src: HFSource) -> dict[str, Any]:
    hf = src.hf
    src.reject(attn_type=("bi",), bi_data=(False,), reuse_len=(None,), summary_type=("last",),
               summary_use_proj=(True,), summary_activation=("tanh",), summary_proj_to_labels=(False, None),
               summary_first_dropout=(0, 0.0, None))
    d_model, n_head = hf["d_model"], hf["n_head"]
    if hf.get("d_head") not in (None, d_model // n_head):
        raise ConfigError(f"{src.where}: d_head={hf['d_head']} is not d_model // n_head = {d_model // n_head}")
    dropout = float(hf.get("dropout", 0.1))
    return dict(hidden_size=d_model, num_layers=hf["n_layer"], num_heads=n_head, intermediate_size=hf["d_inner"],
                activation=src.act(ACT_IN, "ff_activation", "gelu"),
                layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)), dropout=dropout, attention_dropout=dropout,
                classifier_dropout=float(hf.get("summary_last_dropout", 0.1)),
                mem_len=int(hf.get("mem_len") or 0), clamp_len=int(hf.get("clamp_len", -1)))


def to_hf(c: XLNetConfig) -> dict[str, Any]:
    return dict(d_model=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads, d_head=c.head_dim,
                d_inner=c.intermediate_size, ff_activation=act(ACT_OUT, c.activation, "export"),
                layer_norm_eps=c.layer_norm_eps, dropout=c.dropout, mem_len=c.mem_len or None,
                use_mems_eval=bool(c.mem_len), use_mems_train=False, reuse_len=None, clamp_len=c.clamp_len,
                attn_type="bi", bi_data=False, same_length=False, summary_type="last", summary_use_proj=True,
                summary_activation="tanh", summary_last_dropout=c.classifier_dropout)


def check_exportable(c: XLNetConfig) -> None:
    """HF's XLNet has one dropout rate for everything and a tanh summary."""
    if c.attention_dropout != c.dropout:
        raise ConfigError(f"xlnet in HF has one dropout rate; this model has dropout={c.dropout}, "
                          f"attention_dropout={c.attention_dropout}")
    if c.classifier_activation != "tanh":
        raise ConfigError(f"xlnet in HF summarises with tanh; this model has {c.classifier_activation!r}")


ADAPTER = Adapter(
    model_type="xlnet", family="xlnet", class_prefix="XLNet", base_prefix="transformer", preset="xlnet-large-cased",
    architectures={"Model": (), "LMHeadModel": ("plm",), "ForSequenceClassification": ("classification",),
                   "ForTokenClassification": ("token_classification",), "ForMultipleChoice": ("multiple_choice",),
                   "ForQuestionAnsweringSimple": ("qa",)},
    unsupported={"ForQuestionAnswering": "its beam-search start/end/answer-class heads are not an lmforge head; "
                                         "use XLNetForQuestionAnsweringSimple"},
    head_styles={"classification": "last_mlp", "multiple_choice": "last_mlp"},
    rules=rules, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable,
    ranges=lambda c: {"layer": c.num_layers},
)
