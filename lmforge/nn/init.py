"""Weight initialisation by role, as the family's paper or reference code does it.

BERT (and RoBERTa/ALBERT/ELECTRA/DistilBERT, which follow its code): every Linear and Embedding
~ N(0, initializer_range), biases 0, LayerNorm 1/0, padding row 0. GPT-1 §4.1: N(0, 0.02).
GPT-2 §2.3: additionally the projections that write into the residual stream are scaled by
1/sqrt(N) where N = 2 * n_layers (two residual branches per layer). Those Linears carry the role
flag `residual_output` (set by lmforge.nn.attention / feedforward), so no parameter name is matched.
T5 (Mesh TensorFlow's init, as HF's T5 reproduces it): see `fan_in_init`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.attention import Attention
from lmforge.nn.norms import RMSNorm
from lmforge.nn.relative_position import RelativePositionBias


def init_weights(model: nn.Module, config: ModelConfig) -> None:
    if getattr(config, "initializer", "normal") == "fan_in":  # other config classes (ELMo) have no such field
        fan_in_init(model, config.initializer_range, config.hidden_size)
        return
    std = config.initializer_range
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            if not module.weight.requires_grad:  # fixed sinusoidal table
                continue
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    if config.scaled_residual_init:
        residual_std = std / math.sqrt(2 * config.num_layers)
        for module in model.modules():
            if getattr(module, "residual_output", False):  # role set where the Linear is built
                nn.init.normal_(module.weight, mean=0.0, std=residual_std)


@torch.no_grad()
def fan_in_init(model: nn.Module, factor: float, hidden_size: int) -> None:
    """T5's init: every Linear ~ N(0, factor * fan_in^-1/2); token tables and the vocabulary projection
    (role flag `output_projection`, often the same tensor) ~ N(0, factor); relative-position tables ~
    N(0, factor * d_model^-1/2); norms 1. An attention with `scale` 1.0 (T5 does not divide the scores by
    sqrt(d)) gets that factor in its query init instead: queries ~ N(0, factor * (fan_in * head_size)^-1/2)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = factor if getattr(module, "output_projection", False) else factor * module.in_features ** -0.5
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=factor)
        elif isinstance(module, RelativePositionBias):
            nn.init.normal_(module.weight, mean=0.0, std=factor * hidden_size ** -0.5)
        elif isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, Attention) and module.scale == 1.0:
            query = module.q.weight if module.cross else module.qkv.weight[: module.num_heads * module.head_dim]
            query.mul_(module.head_dim ** -0.5)  # (inner, d): the query rows of a fused qkv
