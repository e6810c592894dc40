"""Weight initialisation by role, as the family's paper or reference code does it.

BERT (and RoBERTa/ALBERT/ELECTRA/DistilBERT, which follow its code): every Linear and Embedding
~ N(0, initializer_range), biases 0, LayerNorm 1/0, padding row 0. GPT-1 §4.1: N(0, 0.02).
GPT-2 §2.3: additionally the projections that write into the residual stream are scaled by
1/sqrt(N) where N = 2 * n_layers (two residual branches per layer). Those Linears carry the role
flag `residual_output` (set by lmforge.nn.attention / feedforward), so no parameter name is matched.
"""

from __future__ import annotations

import math

from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.norms import RMSNorm


def init_weights(model: nn.Module, config: ModelConfig) -> None:
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
