"""Which model a pre-training run trains: the backbone preset sized to the data's tokenizer, built
by the run's objective (its heads, or a composite such as ELECTRA's generator + discriminator)."""

from __future__ import annotations

from typing import Any

from torch import nn

from lmforge.config import PRESET_CLASSES, ModelConfig
from lmforge.models import TaskModel
from lmforge.objectives.registry import make_objective
from lmforge.train.config import PretrainConfig


def model_config(config: PretrainConfig, vocab_size: int, pad_token_id: int | None) -> ModelConfig:
    """The preset, with the vocabulary and padding id of the tokenizer the data was prepared with,
    checked against the objective (causal vs encoder, segments, positions)."""
    config_class = PRESET_CLASSES.get(config.model.preset, ModelConfig)  # ModelConfig names unknown presets
    base = config_class.from_name(config.model.preset)
    fields: dict[str, Any] = {"vocab_size": vocab_size}
    if base.pad_token_id is not None and pad_token_id is not None:
        fields["pad_token_id"] = pad_token_id
        if base.position_offset:  # RoBERTa positions start after the padding id
            fields["position_offset"] = pad_token_id + 1
    fields.update(config.model.overrides)
    model = config_class.from_name(config.model.preset, **fields)
    try:
        make_objective(config.objective).check_model(model)
    except ValueError as err:
        raise ValueError(f"model.preset {config.model.preset!r}: {err}") from None
    return model


def build_pretraining_model(config: PretrainConfig, vocab_size: int,
                            pad_token_id: int | None) -> tuple[nn.Module, dict[str, TaskModel]]:
    """The module the loop calls (`module(**batch).loss`) and the models saved from it, by sub-dir."""
    backbone = model_config(config, vocab_size, pad_token_id)
    return make_objective(config.objective).build_model(backbone, config)


def find_unused_parameters(config: PretrainConfig, models: dict[str, TaskModel]) -> bool:
    """DDP must look for parameters without gradients when a model has a pooler its heads never read."""
    pooled = any(getattr(m.backbone, "pooler", None) is not None for m in models.values())
    return pooled and not make_objective(config.objective).reads_pooler
