"""Feed-forward and the Transformer block, with LayerNorm after (post-LN) or before (pre-LN)."""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.activations import activation
from lmforge.nn.attention import SelfAttention
from lmforge.nn.dropout import Dropout


class FeedForward(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, act: str) -> None:
        super().__init__()
        self.fc_in = nn.Linear(hidden_size, intermediate_size)
        self.act = activation(act)
        self.fc_out = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    """One layer. Post-LN (BERT, GPT-1): x = LN(x + f(x)). Pre-LN (GPT-2 §2.3): x = x + f(LN(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn = SelfAttention(config.hidden_size, config.num_heads, config.attention_dropout)
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = FeedForward(config.hidden_size, config.intermediate_size, config.activation)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), mask, is_causal))
            return x + self.drop(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, mask, is_causal)))
        return self.norm2(x + self.drop(self.mlp(x)))
