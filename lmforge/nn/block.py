"""One Transformer layer: self-attention, optional cross-attention, feed-forward, each a residual branch.

Post-LN (Vaswani et al. §3.1, BERT, GPT-1): x = LN(x + f(x)). Pre-LN (GPT-2 §2.3, T5): x = x + f(LN(x)).
The block is described by a `LayerSpec`, not a model config, so every family's config (or its own
config class) can build it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.nn.attention import NO_MASK, Attention
from lmforge.nn.cache import KVCache
from lmforge.nn.dropout import Dropout
from lmforge.nn.feedforward import FeedForward
from lmforge.nn.masks import AttnMask
from lmforge.nn.norms import NormKind, build_norm


@dataclass(frozen=True)
class LayerSpec:
    hidden_size: int
    num_heads: int
    intermediate_size: int
    activation: str
    dropout: float
    attention_dropout: float
    norm_eps: float
    pre_norm: bool
    norm: NormKind = "layer"
    bias: bool = True  # Linear and LayerNorm biases (T5 has none)
    gated: bool = False  # gated feed-forward (T5 v1.1)
    inner_dropout: float = 0.0  # dropout after the FFN activation (T5)
    head_dim: int | None = None  # None: hidden_size // num_heads
    attention_scale: float | None = None  # None: 1/sqrt(head_dim); T5: 1.0


class Block(nn.Module):
    def __init__(self, spec: LayerSpec, cross_attention: bool = False) -> None:
        super().__init__()
        self.pre_norm = spec.pre_norm
        h = spec.hidden_size

        def attention(cross: bool) -> Attention:
            return Attention(h, spec.num_heads, spec.attention_dropout, cross=cross, head_dim=spec.head_dim,
                             bias=spec.bias, scale=spec.attention_scale)

        self.attn = attention(cross=False)
        self.norm1 = build_norm(spec.norm, h, spec.norm_eps, spec.bias)
        self.cross_attn = attention(cross=True) if cross_attention else None
        self.norm_cross = build_norm(spec.norm, h, spec.norm_eps, spec.bias) if cross_attention else None
        self.mlp = FeedForward(h, spec.intermediate_size, spec.activation, gated=spec.gated, bias=spec.bias,
                               inner_dropout=spec.inner_dropout)
        self.norm2 = build_norm(spec.norm, h, spec.norm_eps, spec.bias)
        self.drop = Dropout(spec.dropout)

    def residual(self, x: torch.Tensor, norm: nn.Module, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(branch(norm(x)))
        return norm(x + self.drop(branch(x)))

    def forward(self, x: torch.Tensor, mask: AttnMask = NO_MASK, *, memory: torch.Tensor | None = None,
                memory_mask: AttnMask = NO_MASK, cache: KVCache | None = None, layer: int = 0,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, H) -> (B, T, H), and the self-attention scores when `need_weights`."""
        scores = None

        def self_attention(h: torch.Tensor) -> torch.Tensor:
            nonlocal scores
            y, scores = self.attn(h, mask, cache=cache, layer=layer, need_weights=need_weights)
            return y

        x = self.residual(x, self.norm1, self_attention)
        if self.cross_attn is not None:
            x = self.residual(x, self.norm_cross, lambda h: self.cross_attn(
                h, memory_mask, memory=memory, cache=cache, layer=layer)[0])
        return self.residual(x, self.norm2, self.mlp), scores
