"""Declarative tensor-name maps between HuggingFace checkpoints and lmforge, per family.

Each map is {hf_template: ours_template | None}; `{}` stands for the block index (ALBERT: the
layer *group*, since its layers share a group's weights, §3.1). None marks a tensor HF stores that
carries no weights and is dropped on purpose: `position_ids`/`token_type_ids` buffers saved by old
transformers versions, GPT-2's causal-mask buffers `attn.bias`/`attn.masked_bias`.
Backbone templates are written without HF's base-model prefix (`bert.`, `transformer.` ...);
head templates are full HF names, and `{head}` is replaced by the lmforge head's name.

Named transforms live next to the maps:
- FUSED: our one qkv Linear <-> HF's separate query/key/value Linears (concatenated on dim 0);
- TRANSPOSED: GPT's Conv1D stores weights as (in, out), a Linear as (out, in);
- several HF names mapping to one of ours are aliases of one tensor (HF ties the MLM decoder bias
  to the head's bias); the first is the one written on export.
The MLM/LM decoder weight is tied to the token embedding when `tie_word_embeddings`; then the HF
name is optional on import and not written on export (HF re-ties it on load).
"""

from __future__ import annotations

from dataclasses import dataclass, field

KeyMap = dict[str, str | None]


def _wb(hf: str, ours: str) -> KeyMap:
    """A Linear or LayerNorm: weight and bias."""
    return {f"{hf}.weight": f"{ours}.weight", f"{hf}.bias": f"{ours}.bias"}


@dataclass(frozen=True)
class FamilyMap:
    backbone: KeyMap
    fused: dict[str, tuple[str, str, str]]  # ours module -> HF q, k, v modules (weight and bias)
    heads: dict[str, KeyMap]  # head kind -> map of HF names to names under heads.{head}
    transposed: frozenset[str] = field(default_factory=frozenset)  # HF weights stored (in, out)


L = "backbone.layers.{}"


def _bert_like_layers(hf: str) -> KeyMap:
    """BERT's layer layout, shared by RoBERTa and ELECTRA. `hf` is the layer's HF path."""
    return {
        **_wb(f"{hf}.attention.output.dense", f"{L}.attn.out"),
        **_wb(f"{hf}.attention.output.LayerNorm", f"{L}.norm1"),
        **_wb(f"{hf}.intermediate.dense", f"{L}.mlp.fc_in"),
        **_wb(f"{hf}.output.dense", f"{L}.mlp.fc_out"),
        **_wb(f"{hf}.output.LayerNorm", f"{L}.norm2"),
    }


_EMBEDDINGS: KeyMap = {
    "embeddings.word_embeddings.weight": "backbone.embeddings.tok.weight",
    "embeddings.position_embeddings.weight": "backbone.embeddings.pos.weight",
    "embeddings.token_type_embeddings.weight": "backbone.embeddings.seg.weight",
    **_wb("embeddings.LayerNorm", "backbone.embeddings.norm"),
    "embeddings.position_ids": None,
    "embeddings.token_type_ids": None,
}
_BERT_BACKBONE: KeyMap = {
    **_EMBEDDINGS,
    **_bert_like_layers("encoder.layer.{}"),
    **_wb("pooler.dense", "backbone.pooler.dense"),
}
_BERT_QKV = {f"{L}.attn.qkv": tuple(f"encoder.layer.{{}}.attention.self.{n}" for n in ("query", "key", "value"))}

H = "heads.{head}"


def _mlm(prefix_dense: str, prefix_norm: str, decoder: str, bias_names: tuple[str, ...]) -> KeyMap:
    out = {**_wb(prefix_dense, f"{H}.dense"), **_wb(prefix_norm, f"{H}.norm"),
           f"{decoder}.weight": f"{H}.decoder.weight"}
    for name in bias_names:
        out[name] = f"{H}.bias"
    return out


def _linear_head(hf: str) -> KeyMap:
    return _wb(hf, f"{H}.out")


def _mlp_head(dense: str, out: str) -> KeyMap:
    return {**_wb(dense, f"{H}.dense"), **_wb(out, f"{H}.out")}


_TASKS: dict[str, KeyMap] = {
    "token_classification": _linear_head("classifier"),
    "qa": _linear_head("qa_outputs"),
}

BERT = FamilyMap(
    backbone=_BERT_BACKBONE,
    fused=_BERT_QKV,
    heads={
        "mlm": _mlm("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                    "cls.predictions.decoder", ("cls.predictions.bias", "cls.predictions.decoder.bias")),
        "nsp": _linear_head("cls.seq_relationship"),
        "classification": _linear_head("classifier"),
        "multiple_choice": _linear_head("classifier"),
        **_TASKS,
    },
)

ROBERTA = FamilyMap(
    backbone=_BERT_BACKBONE,
    fused=_BERT_QKV,
    heads={
        "mlm": _mlm("lm_head.dense", "lm_head.layer_norm", "lm_head.decoder",
                    ("lm_head.bias", "lm_head.decoder.bias")),
        "classification": _mlp_head("classifier.dense", "classifier.out_proj"),
        "multiple_choice": _linear_head("classifier"),  # over RoBERTa's pooler
        **_TASKS,
    },
)

ELECTRA = FamilyMap(
    backbone={
        **{k: v for k, v in _BERT_BACKBONE.items() if not k.startswith("pooler.")},
        **_wb("embeddings_project", "backbone.embeddings.proj"),
    },
    fused=_BERT_QKV,
    heads={
        "mlm": _mlm("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head",
                    ("generator_lm_head.bias",)),
        "rtd": {**_wb("discriminator_predictions.dense", f"{H}.dense"),
                **_wb("discriminator_predictions.dense_prediction", f"{H}.out")},
        "classification": _mlp_head("classifier.dense", "classifier.out_proj"),
        "multiple_choice": _mlp_head("sequence_summary.summary", "classifier"),
        **_TASKS,
    },
)

_ALBERT_LAYER = "encoder.albert_layer_groups.{}.albert_layers.0"  # inner_group_num == 1
ALBERT = FamilyMap(
    backbone={
        **_EMBEDDINGS,
        **_wb("encoder.embedding_hidden_mapping_in", "backbone.embeddings.proj"),
        **_wb(f"{_ALBERT_LAYER}.attention.dense", f"{L}.attn.out"),
        **_wb(f"{_ALBERT_LAYER}.attention.LayerNorm", f"{L}.norm1"),
        **_wb(f"{_ALBERT_LAYER}.ffn", f"{L}.mlp.fc_in"),
        **_wb(f"{_ALBERT_LAYER}.ffn_output", f"{L}.mlp.fc_out"),
        **_wb(f"{_ALBERT_LAYER}.full_layer_layer_norm", f"{L}.norm2"),
        **_wb("pooler", "backbone.pooler.dense"),
    },
    fused={f"{L}.attn.qkv": tuple(f"{_ALBERT_LAYER}.attention.{n}" for n in ("query", "key", "value"))},
    heads={
        "mlm": _mlm("predictions.dense", "predictions.LayerNorm", "predictions.decoder",
                    ("predictions.bias", "predictions.decoder.bias")),
        "sop": _linear_head("sop_classifier.classifier"),
        "classification": _linear_head("classifier"),
        "multiple_choice": _linear_head("classifier"),
        **_TASKS,
    },
)

_DL = "transformer.layer.{}"
DISTILBERT = FamilyMap(
    backbone={
        "embeddings.word_embeddings.weight": "backbone.embeddings.tok.weight",
        "embeddings.position_embeddings.weight": "backbone.embeddings.pos.weight",
        **_wb("embeddings.LayerNorm", "backbone.embeddings.norm"),
        "embeddings.position_ids": None,
        **_wb(f"{_DL}.attention.out_lin", f"{L}.attn.out"),
        **_wb(f"{_DL}.sa_layer_norm", f"{L}.norm1"),
        **_wb(f"{_DL}.ffn.lin1", f"{L}.mlp.fc_in"),
        **_wb(f"{_DL}.ffn.lin2", f"{L}.mlp.fc_out"),
        **_wb(f"{_DL}.output_layer_norm", f"{L}.norm2"),
    },
    fused={f"{L}.attn.qkv": tuple(f"{_DL}.attention.{n}_lin" for n in ("q", "k", "v"))},
    heads={
        "mlm": _mlm("vocab_transform", "vocab_layer_norm", "vocab_projector", ("vocab_projector.bias",)),
        "classification": _mlp_head("pre_classifier", "classifier"),
        "multiple_choice": _mlp_head("pre_classifier", "classifier"),
        **_TASKS,
    },
)


def _gpt_layers() -> KeyMap:
    return {
        **_wb("h.{}.attn.c_attn", f"{L}.attn.qkv"),  # Conv1D (H, 3H) holds q|k|v: already fused
        **_wb("h.{}.attn.c_proj", f"{L}.attn.out"),
        **_wb("h.{}.ln_1", f"{L}.norm1"),
        **_wb("h.{}.mlp.c_fc", f"{L}.mlp.fc_in"),
        **_wb("h.{}.mlp.c_proj", f"{L}.mlp.fc_out"),
        **_wb("h.{}.ln_2", f"{L}.norm2"),
        "h.{}.attn.bias": None,  # causal-mask buffer of old checkpoints
        "h.{}.attn.masked_bias": None,
    }


_GPT_TRANSPOSED = frozenset(f"h.{{}}.{m}.weight" for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
_GPT_HEADS: dict[str, KeyMap] = {
    "clm": {"lm_head.weight": f"{H}.decoder.weight"},
    "classification": {"score.weight": f"{H}.out.weight"},
    **_TASKS,
}

OPENAI_GPT = FamilyMap(
    backbone={"tokens_embed.weight": "backbone.embeddings.tok.weight",
              "positions_embed.weight": "backbone.embeddings.pos.weight",
              "position_ids": None, **_gpt_layers()},
    fused={},
    heads={k: v for k, v in _GPT_HEADS.items() if k in ("clm", "classification")},
    transposed=_GPT_TRANSPOSED,
)

GPT2 = FamilyMap(
    backbone={"wte.weight": "backbone.embeddings.tok.weight", "wpe.weight": "backbone.embeddings.pos.weight",
              **_gpt_layers(), **_wb("ln_f", "backbone.norm_f")},
    fused={},
    heads=_GPT_HEADS,
    transposed=_GPT_TRANSPOSED,
)

FAMILY_MAPS: dict[str, FamilyMap] = {
    "bert": BERT, "roberta": ROBERTA, "albert": ALBERT, "electra": ELECTRA, "distilbert": DISTILBERT,
    "openai-gpt": OPENAI_GPT, "gpt2": GPT2,
}
