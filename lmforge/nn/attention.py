"""Multi-head self-attention through `F.scaled_dot_product_attention`."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.nn.dropout import dropout


def attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                           is_causal: bool, p: float) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) with dropout on the probabilities, then @ v.

    What SDPA computes, written out for CPU training: there SDPA falls back to its math path as soon
    as dropout_p > 0 and draws the mask with `bernoulli_`; this path is the same arithmetic with
    lmforge's cheaper dropout mask (lmforge.nn.dropout)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)  # (B, nh, T, T)
    if is_causal:
        seq = q.shape[-2]
        mask = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()  # (T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = dropout(scores.softmax(dim=-1), p, training=True)
    return torch.matmul(probs, v)  # (B, nh, T, hd)


class SelfAttention(nn.Module):
    """q, k and v come from one fused projection (one matmul instead of three)."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        batch, seq, hidden = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.num_heads, self.head_dim)  # (B, T, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hd)
        p = self.dropout if self.training else 0.0
        if p > 0.0 and x.device.type == "cpu":
            y = attention_with_dropout(q, k, v, mask, is_causal, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=p)
        y = y.transpose(1, 2).reshape(batch, seq, hidden)  # (B, T, H)
        return self.out(y)
