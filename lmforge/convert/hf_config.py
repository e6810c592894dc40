"""HuggingFace `config.json` <-> `ModelConfig` + head specs, for the seven families we implement.

HF spreads one architecture over per-family field names (`n_embd` vs `hidden_size` vs `dim`) and
per-family hard-coded choices (RoBERTa's MLM head always uses GELU, DistilBERT's LayerNorm eps is
fixed at 1e-12). Both directions are explicit here so a field we cannot represent is an error,
never a silently different model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmforge.config import ModelConfig

# HF model_type -> our family (they coincide, but keep the mapping explicit)
MODEL_TYPES: dict[str, str] = {
    "bert": "bert", "roberta": "roberta", "albert": "albert", "electra": "electra",
    "distilbert": "distilbert", "openai-gpt": "openai-gpt", "gpt2": "gpt2",
}
# class-name prefix and base_model_prefix (the attribute holding the backbone in head models)
CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra",
                "distilbert": "DistilBert", "openai-gpt": "OpenAIGPT", "gpt2": "GPT2"}
BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "albert": "albert", "electra": "electra",
               "distilbert": "distilbert", "openai-gpt": "transformer", "gpt2": "transformer"}

# HF architecture suffix -> our head kinds, per family (every head class HF has for the family,
# except the ones listed in UNSUPPORTED with the reason).
_ENCODER_TASKS = {
    "ForSequenceClassification": ("classification",),
    "ForTokenClassification": ("token_classification",),
    "ForQuestionAnswering": ("qa",),
    "ForMultipleChoice": ("multiple_choice",),
}
ARCHITECTURES: dict[str, dict[str, tuple[str, ...]]] = {
    "bert": {"Model": (), "ForPreTraining": ("mlm", "nsp"), "ForMaskedLM": ("mlm",),
             "ForNextSentencePrediction": ("nsp",), **_ENCODER_TASKS},
    "roberta": {"Model": (), "ForMaskedLM": ("mlm",), **_ENCODER_TASKS},
    "albert": {"Model": (), "ForPreTraining": ("mlm", "sop"), "ForMaskedLM": ("mlm",), **_ENCODER_TASKS},
    "electra": {"Model": (), "ForPreTraining": ("rtd",), "ForMaskedLM": ("mlm",), **_ENCODER_TASKS},
    "distilbert": {"Model": (), "ForMaskedLM": ("mlm",), **_ENCODER_TASKS},
    "openai-gpt": {"Model": (), "LMHeadModel": ("clm",), "ForSequenceClassification": ("classification",)},
    "gpt2": {"Model": (), "LMHeadModel": ("clm",), "ForSequenceClassification": ("classification",),
             "ForTokenClassification": ("token_classification",), "ForQuestionAnswering": ("qa",)},
}
UNSUPPORTED = {
    "LMHeadModel": "BERT used as a causal decoder (is_decoder=True) is not a model lmforge builds",
    "ForCausalLM": "an encoder used as a causal decoder (is_decoder=True) is not a model lmforge builds",
    "DoubleHeadsModel": "the LM + multiple-choice head reads the token at `mc_token_ids`, which lmforge's "
                        "multiple-choice head does not take; convert the LMHeadModel part instead",
}

# HF activation names -> ours. HF "gelu" is the exact erf GELU except in OpenAI GPT, whose "gelu"
# is the tanh approximation (modeling_openai.ACT_FNS).
_ACT_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_ACT_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
_GPT1_ACT_IN = {"gelu": "gelu_tanh", "relu": "relu"}
_GPT1_ACT_OUT = {"gelu_tanh": "gelu", "relu": "relu"}


class ConfigError(ValueError):
    """A config we cannot represent exactly."""


@dataclass
class HFModelInfo:
    """What an HF config.json says, in our terms."""

    family: str
    architecture: str
    config: ModelConfig
    heads: dict[str, dict[str, Any]]


def _act(table: dict[str, str], name: Any, where: str) -> str:
    if name not in table:
        raise ConfigError(f"{where}: activation {name!r} is not supported (supported: {sorted(table)})")
    return table[name]


def family_of(hf: dict[str, Any], where: str) -> str:
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported; "
                          f"supported: {', '.join(MODEL_TYPES)}")
    return MODEL_TYPES[model_type]


def architecture_of(hf: dict[str, Any], family: str, where: str) -> tuple[str, tuple[str, ...]]:
    """The HF class named by `architectures` and the head kinds it carries."""
    archs = hf.get("architectures") or [CLASS_PREFIX[family] + "Model"]
    if len(archs) != 1:
        raise ConfigError(f"{where}: expected one entry in 'architectures', got {archs}")
    arch = archs[0]
    prefix = CLASS_PREFIX[family]
    if not arch.startswith(prefix):
        raise ConfigError(f"{where}: architecture {arch!r} does not belong to model_type {hf['model_type']!r}")
    suffix = arch[len(prefix):]
    if suffix in ARCHITECTURES[family]:
        return arch, ARCHITECTURES[family][suffix]
    if suffix in UNSUPPORTED:
        raise ConfigError(f"{where}: {arch} is not supported: {UNSUPPORTED[suffix]}")
    raise ConfigError(f"{where}: unknown architecture {arch!r}; supported for {family}: "
                      + ", ".join(prefix + s for s in ARCHITECTURES[family]))


def _labels(hf: dict[str, Any], where: str) -> tuple[int, list[str] | None]:
    id2label = hf.get("id2label")
    if id2label:
        try:
            items = sorted((int(k), str(v)) for k, v in id2label.items())
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: id2label keys must be integers, got {list(id2label)}") from None
        if [i for i, _ in items] != list(range(len(items))):
            raise ConfigError(f"{where}: id2label must number labels 0..n-1, got {[i for i, _ in items]}")
        names = [name for _, name in items]
        generic = names == [f"LABEL_{i}" for i in range(len(names))]
        return len(names), None if generic else names
    return int(hf.get("num_labels", 2)), None


def _heads(kinds: tuple[str, ...], hf: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    heads: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        spec: dict[str, Any] = {"kind": kind}
        if kind in ("classification", "token_classification"):
            problem = hf.get("problem_type")
            if problem == "multi_label_classification":
                raise ConfigError(f"{where}: problem_type 'multi_label_classification' is not supported "
                                  "(lmforge classifies single labels or regresses one value)")
            num_labels, names = _labels(hf, where)
            if kind == "classification" and problem == "regression" and num_labels != 1:
                raise ConfigError(f"{where}: regression with num_labels={num_labels}; lmforge regresses one value")
            spec.update(num_labels=num_labels, label_names=names)
        heads[kind] = spec
    return heads


def _reject(hf: dict[str, Any], where: str, **bad: Any) -> None:
    """Error if any HF field has a value (other than its default) we cannot represent."""
    for key, allowed in bad.items():
        value = hf.get(key, allowed[0])
        if value not in allowed:
            raise ConfigError(f"{where}: {key}={value!r} is not supported (lmforge builds {key}={allowed[0]!r})")


def from_hf_config(hf: dict[str, Any], where: str = "config.json",
                   state_keys: set[str] | None = None) -> HFModelInfo:
    """Map an HF config dict. `state_keys` (the checkpoint's tensor names, prefix stripped) decides
    whether a BERT/RoBERTa/ALBERT pooler exists: HF drops it from some head classes."""
    family = family_of(hf, where)
    arch, kinds = architecture_of(hf, family, where)
    heads = _heads(kinds, hf, where)
    tie = bool(hf.get("tie_word_embeddings", True))
    init_range = float(hf.get("initializer_range") or 0.02)
    pad = hf.get("pad_token_id")
    if family in ("bert", "roberta", "albert", "electra"):
        _reject(hf, where, position_embedding_type=("absolute",), is_decoder=(False,),
                add_cross_attention=(False,))
        fields: dict[str, Any] = dict(
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["intermediate_size"],
            activation=_act(_ACT_IN, hf.get("hidden_act", "gelu"), where),
            dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            pad_token_id=pad, initializer_range=init_range, tie_word_embeddings=tie,
        )
        if family == "albert":
            _reject(hf, where, inner_group_num=(1,))
            fields.update(embedding_size=hf.get("embedding_size", 128),
                          num_layer_groups=hf.get("num_hidden_groups", 1),
                          classifier_dropout=float(hf.get("classifier_dropout_prob", 0.1)))
        else:
            if hf.get("classifier_dropout") is not None:
                fields["classifier_dropout"] = float(hf["classifier_dropout"])
        if family == "electra":
            fields.update(embedding_size=hf.get("embedding_size", hf["hidden_size"]))
            if "multiple_choice" in kinds:
                # ELECTRA's multiple-choice head is a SequenceSummary: first token -> proj -> act
                _reject(hf, where, summary_type=("first",), summary_use_proj=(True,))
                fields["classifier_activation"] = _act(_ACT_IN, hf.get("summary_activation", "gelu"), where)
        if family == "roberta":
            if pad is None:
                raise ConfigError(f"{where}: RoBERTa needs pad_token_id (its positions count from it)")
            fields["position_offset"] = pad + 1
        has_pooler = family != "electra"
        if has_pooler and state_keys is not None:
            pooler_key = "pooler.weight" if family == "albert" else "pooler.dense.weight"
            has_pooler = pooler_key in state_keys
        fields["pooler"] = has_pooler
        if not has_pooler and family in ("bert", "albert"):
            # HF drops the pooler from MLM/QA/tagging heads. A later classifier then gets the
            # pooler's dense+tanh as a fresh first-token MLP, which is what HF would initialise.
            fields.update(classifier_style="first_mlp", classifier_activation="tanh")
    elif family == "distilbert":
        fields = dict(
            vocab_size=hf["vocab_size"], hidden_size=hf["dim"], num_layers=hf["n_layers"],
            num_heads=hf["n_heads"], intermediate_size=hf["hidden_dim"],
            activation=_act({"gelu": "gelu", "relu": "relu"}, hf.get("activation", "gelu"), where),
            dropout=float(hf.get("dropout", 0.1)), attention_dropout=float(hf.get("attention_dropout", 0.1)),
            classifier_dropout=float(hf.get("seq_classif_dropout", 0.2)),
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            sinusoidal_positions=bool(hf.get("sinusoidal_pos_embds", False)),
            pad_token_id=pad, initializer_range=init_range, tie_word_embeddings=tie,
        )
    else:  # openai-gpt, gpt2
        _reject(hf, where, add_cross_attention=(False,))
        if family == "gpt2":
            _reject(hf, where, scale_attn_weights=(True,), scale_attn_by_inverse_layer_idx=(False,))
            act = _act(_ACT_IN, hf.get("activation_function", "gelu_new"), where)
            inner = hf.get("n_inner") or 4 * hf["n_embd"]
        else:
            act = _act(_GPT1_ACT_IN, hf.get("afn", "gelu"), where)
            inner = 4 * hf["n_embd"]
        fields = dict(
            vocab_size=hf["vocab_size"], hidden_size=hf["n_embd"], num_layers=hf["n_layer"],
            num_heads=hf["n_head"], intermediate_size=inner, activation=act,
            max_position_embeddings=hf.get("n_positions", 512 if family == "openai-gpt" else 1024),
            dropout=float(hf.get("resid_pdrop", 0.1)), attention_dropout=float(hf.get("attn_pdrop", 0.1)),
            layer_norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
            pad_token_id=pad, initializer_range=init_range, tie_word_embeddings=tie,
        )
        if hf.get("classifier_dropout") is not None:
            fields["classifier_dropout"] = float(hf["classifier_dropout"])
    try:
        config = ModelConfig.from_name(_PRESET[family], **fields)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None
    return HFModelInfo(family=family, architecture=arch, config=config, heads=heads)


_PRESET = {"bert": "bert-base-uncased", "roberta": "roberta-base", "albert": "albert-base-v2",
           "electra": "electra-base-discriminator", "distilbert": "distilbert-base-uncased",
           "openai-gpt": "openai-gpt", "gpt2": "gpt2"}


# ---------------------------------------------------------------------------------------------
# ours -> HF
# ---------------------------------------------------------------------------------------------
def _require(config: ModelConfig, **expected: Any) -> None:
    """HF hard-codes these per family; an lmforge model that differs has no HF equivalent."""
    for key, value in expected.items():
        if getattr(config, key) != value:
            raise ConfigError(f"{config.family} in HF requires {key}={value!r}; this model has "
                              f"{key}={getattr(config, key)!r}")


def _check_exportable(config: ModelConfig) -> None:
    c = config
    if c.family in ("bert", "roberta", "albert", "electra", "distilbert"):
        _require(c, causal=False, norm_position="post", embedding_norm=True)
    if c.family in ("bert", "roberta", "electra", "distilbert"):
        _require(c, num_blocks=c.num_layers)
    if c.family in ("bert", "roberta", "distilbert"):
        _require(c, embedding_size=c.hidden_size)
    if c.family != "roberta":
        _require(c, position_offset=0)
    if c.family != "distilbert":
        _require(c, sinusoidal_positions=False)
    if c.family in ("bert", "albert", "distilbert"):
        _require(c, mlm_activation=c.activation)
    if c.family == "roberta":
        _require(c, position_offset=(c.pad_token_id or 0) + 1, mlm_activation="gelu",
                 classifier_activation="tanh")
    if c.family == "electra":
        _require(c, pooler=False, mlm_activation="gelu")
    if c.family == "distilbert":
        _require(c, type_vocab_size=0, pooler=False, layer_norm_eps=1e-12, classifier_activation="relu")
    if c.family in ("openai-gpt", "gpt2"):
        _require(c, causal=True, embedding_norm=False, type_vocab_size=0, pooler=False,
                 embedding_size=c.hidden_size, num_blocks=c.num_layers,
                 norm_position="pre" if c.family == "gpt2" else "post")
    if c.family == "openai-gpt":
        _require(c, intermediate_size=4 * c.hidden_size)


def _id2label(spec: dict[str, Any]) -> dict[str, Any]:
    n = spec.get("num_labels") or 2
    names = spec.get("label_names") or [f"LABEL_{i}" for i in range(n)]
    return {"id2label": {str(i): name for i, name in enumerate(names)},
            "label2id": {name: i for i, name in enumerate(names)}}


def _architecture_for(family: str, kinds: tuple[str, ...]) -> str:
    for suffix, arch_kinds in ARCHITECTURES[family].items():
        if sorted(arch_kinds) == sorted(kinds):
            return CLASS_PREFIX[family] + suffix
    raise ConfigError(f"heads {sorted(kinds)} have no HF {family} architecture; HF has "
                      + ", ".join(f"{CLASS_PREFIX[family]}{s} {list(k)}" for s, k in ARCHITECTURES[family].items()))


# how HF's sequence classifier / multiple-choice head reads the sequence, per family
_HF_STYLE = {
    "classification": {"bert": "pooler", "albert": "pooler", "roberta": "first_mlp", "electra": "first_mlp",
                       "distilbert": "first_mlp", "openai-gpt": "last_token", "gpt2": "last_token"},
    "multiple_choice": {"bert": "pooler", "albert": "pooler", "roberta": "pooler", "electra": "first_mlp",
                        "distilbert": "first_mlp"},
}


def _check_head_styles(config: ModelConfig, heads: dict[str, dict[str, Any]]) -> None:
    for name, spec in heads.items():
        kind = spec["kind"]
        if kind not in _HF_STYLE:
            continue
        want = _HF_STYLE[kind][config.family]
        style = spec.get("style") or config.classifier_style
        if style != want:
            raise ConfigError(f"head {name!r}: HF's {config.family} {kind} head reads the sequence as "
                              f"{want!r}, this one as {style!r}")
        if config.family == "electra" and kind == "classification" and config.classifier_activation != "gelu":
            raise ConfigError(f"head {name!r}: HF's ElectraClassificationHead hard-codes GELU; this model "
                              f"has classifier_activation={config.classifier_activation!r}")


def to_hf_config(config: ModelConfig, heads: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The HF config.json for a model with these heads (specs keyed by head name)."""
    _check_exportable(config)
    c = config
    kinds = tuple(spec["kind"] for spec in heads.values())
    arch = _architecture_for(c.family, kinds)
    hf: dict[str, Any] = {"architectures": [arch], "model_type": c.family,
                          "vocab_size": c.vocab_size, "initializer_range": c.initializer_range,
                          "pad_token_id": c.pad_token_id, "tie_word_embeddings": c.tie_word_embeddings}
    if c.family in ("bert", "roberta", "albert", "electra"):
        hf.update(hidden_size=c.hidden_size, num_hidden_layers=c.num_layers,
                  num_attention_heads=c.num_heads, intermediate_size=c.intermediate_size,
                  hidden_act=_act(_ACT_OUT, c.activation, "export"), hidden_dropout_prob=c.dropout,
                  attention_probs_dropout_prob=c.attention_dropout,
                  max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                  layer_norm_eps=c.layer_norm_eps, position_embedding_type="absolute")
        if c.family == "albert":
            hf.update(embedding_size=c.embedding_size, num_hidden_groups=c.num_blocks,
                      inner_group_num=1, classifier_dropout_prob=c.classifier_dropout)
        else:
            hf["classifier_dropout"] = c.classifier_dropout
        if c.family == "electra":
            hf.update(embedding_size=c.embedding_size, summary_type="first", summary_use_proj=True,
                      summary_activation=_act(_ACT_OUT, c.classifier_activation, "export"),
                      summary_last_dropout=c.classifier_dropout)
    elif c.family == "distilbert":
        hf.update(dim=c.hidden_size, n_layers=c.num_layers, n_heads=c.num_heads, hidden_dim=c.intermediate_size,
                  activation=_act({"gelu": "gelu", "relu": "relu"}, c.activation, "export"),
                  dropout=c.dropout, attention_dropout=c.attention_dropout,
                  seq_classif_dropout=c.classifier_dropout, qa_dropout=c.dropout,
                  max_position_embeddings=c.max_position_embeddings,
                  sinusoidal_pos_embds=c.sinusoidal_positions)
    else:
        hf.update(n_embd=c.hidden_size, n_layer=c.num_layers, n_head=c.num_heads,
                  n_positions=c.max_position_embeddings, resid_pdrop=c.dropout, embd_pdrop=c.dropout,
                  attn_pdrop=c.attention_dropout, layer_norm_epsilon=c.layer_norm_eps,
                  classifier_dropout=c.classifier_dropout)
        if c.family == "gpt2":
            hf.update(n_inner=c.intermediate_size, activation_function=_act(_ACT_OUT, c.activation, "export"),
                      scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
                      reorder_and_upcast_attn=False)
        else:
            hf["afn"] = _act(_GPT1_ACT_OUT, c.activation, "export")
    _check_head_styles(c, heads)
    for spec in heads.values():
        if spec["kind"] in ("classification", "token_classification"):
            hf.update(_id2label(spec))
            if spec["kind"] == "classification":
                hf["problem_type"] = ("regression" if spec.get("num_labels") == 1
                                      else "single_label_classification")
    return hf
