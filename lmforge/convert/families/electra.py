"""ELECTRA (Clark et al. 2020) in HF: BERT's layers, embeddings projected when narrower than the
hidden size, no pooler; the discriminator's replaced-token head, the generator's MLM head; a GELU
first-token classifier and a SequenceSummary multiple-choice head."""

from __future__ import annotations

from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.adapter import (
    ACT_IN,
    ACT_OUT,
    Adapter,
    ConfigError,
    HeadSpecs,
    HFSource,
    act,
    optional_float,
    require,
)
from lmforge.convert.families import bert_like
from lmforge.convert.families.heads import ENCODER_AS_DECODER, ENCODER_TASKS, TASKS, H, mlm, mlp_head
from lmforge.convert.rules import KeyMap, params

RULES = KeyMap(
    backbone=bert_like.BERT_BACKBONE + params("embeddings_project", "backbone.embeddings.proj", optional=True),
    heads={
        "mlm": mlm("generator_predictions.dense", "generator_predictions.LayerNorm", "generator_lm_head",
                   ("generator_lm_head.bias",)),
        "rtd": params("discriminator_predictions.dense", f"{H}.dense")
        + params("discriminator_predictions.dense_prediction", f"{H}.out"),
        "classification": mlp_head("classifier.dense", "classifier.out_proj"),
        "multiple_choice": mlp_head("sequence_summary.summary", "classifier"),
        **TASKS,
    },
)


def from_hf(src: HFSource) -> dict[str, Any]:
    hf = src.hf
    fields = {**bert_like.fields_from_hf(src), **optional_float(hf, "classifier_dropout", "classifier_dropout"),
              "embedding_size": hf.get("embedding_size", hf["hidden_size"]), "pooler": False}
    if "multiple_choice" in src.kinds:
        # ELECTRA's multiple-choice head is a SequenceSummary: first token -> proj -> act
        src.reject(summary_type=("first",), summary_use_proj=(True,))
        fields["classifier_activation"] = src.act(ACT_IN, "summary_activation", "gelu")
    return fields


def to_hf(c: ModelConfig) -> dict[str, Any]:
    return {**bert_like.fields_to_hf(c), "classifier_dropout": c.classifier_dropout,
            "embedding_size": c.embedding_size, "summary_type": "first", "summary_use_proj": True,
            "summary_activation": act(ACT_OUT, c.classifier_activation, "export"),
            "summary_last_dropout": c.classifier_dropout}


def check_exportable(c: ModelConfig) -> None:
    bert_like.check_encoder(c)
    require(c, num_blocks=c.num_layers, position_offset=0, sinusoidal_positions=False, pooler=False,
            mlm_activation="gelu")


def check_heads(c: ModelConfig, heads: HeadSpecs) -> None:
    for name, spec in heads.items():
        if spec["kind"] == "classification" and c.classifier_activation != "gelu":
            raise ConfigError(f"head {name!r}: HF's ElectraClassificationHead hard-codes GELU; this model "
                              f"has classifier_activation={c.classifier_activation!r}")


ADAPTER = Adapter(
    model_type="electra", family="electra", class_prefix="Electra", base_prefix="electra",
    preset="electra-base-discriminator",
    architectures={"Model": (), "ForPreTraining": ("rtd",), "ForMaskedLM": ("mlm",), **ENCODER_TASKS},
    unsupported={"ForCausalLM": ENCODER_AS_DECODER},
    head_styles={"classification": "first_mlp", "multiple_choice": "first_mlp"},
    rules=RULES, from_hf=from_hf, to_hf=to_hf, check_exportable=check_exportable, check_heads=check_heads,
)
