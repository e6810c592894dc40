"""XLNet's relative attention (Yang et al. 2019 §2.4-2.5, after Transformer-XL, Dai et al. 2019 §3.3).

Score of query i on key j, per head, before the 1/sqrt(d) scale:
  (q_i + r_w) . k_j              content term (Transformer-XL's (a) + (c))
+ (q_i + r_r) . W_r R_{i-j}      position term ((b) + (d)), R a sinusoid of the distance
+ (q_i + r_s) . s_{ij}           segment term (§2.5): s_ij = s_+ if i and j are in the same segment, else s_-
Masked scores get -1e30 added, as the reference (`rel_attn_core`) does: a query that may see no key
then attends uniformly instead of producing NaN.

Layout: batch first, (B, n, T, d) heads; keys are the memory followed by the segment (K = M + T).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.nn.attention import attend
from lmforge.nn.dropout import Dropout
from lmforge.nn.masks import AttnMask

MASKED = -1e30  # the reference's additive mask value


def relative_positions(q_len: int, k_len: int, dim: int, clamp_len: int, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    """(K + T, dim) sinusoids (Vaswani et al. §3.5, sin half then cos half) of the distances
    K, K-1, ..., -T+1: every query-minus-key distance of T queries over K keys (§2.4, bidirectional)."""
    distances = torch.arange(k_len, -q_len, -1, device=device, dtype=torch.float32)  # (K + T,)
    if clamp_len > 0:
        distances = distances.clamp(-clamp_len, clamp_len)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)  # (dim/2,)
    angles = distances[:, None] * inv_freq  # (K + T, dim/2)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)


def shift_relative(scores: torch.Tensor, k_len: int) -> torch.Tensor:
    """(B, n, T, K + T) scores against the distances of `relative_positions` -> (B, n, T, K) scores
    against keys: out[i, j] = scores[i, T - i + j] (query i is at absolute position K - T + i, so its
    distance to key j, K - T + i - j, sits at index T - i + j). Flat offset of [i, T - i + j] is
    T + i (K + T - 1) + j: one strided view, no gather."""
    B, n, T, P = scores.shape
    flat = scores.reshape(B, n, T * P)[..., T:]  # (B, n, T (P - 1))
    return flat.view(B, n, T, P - 1)[..., :k_len]


class RelativeAttention(nn.Module):
    """Bias-free q, k, v, r, o projections, the three learned head biases r_w, r_r, r_s and the two
    segment encodings (§2.5); post-LN residual (XLNet's blocks are post-LN, as Transformer-XL's)."""

    def __init__(self, hidden: int, num_heads: int, dropout: float, attention_dropout: float, eps: float) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, hidden // num_heads
        inner = num_heads * self.head_dim
        self.q = nn.Linear(hidden, inner, bias=False)
        self.k = nn.Linear(hidden, inner, bias=False)
        self.v = nn.Linear(hidden, inner, bias=False)
        self.r = nn.Linear(hidden, inner, bias=False)  # W_r: the position key projection
        self.o = nn.Linear(inner, hidden, bias=False)
        self.r_w_bias = nn.Parameter(torch.zeros(num_heads, self.head_dim))  # u of Transformer-XL
        self.r_r_bias = nn.Parameter(torch.zeros(num_heads, self.head_dim))  # v of Transformer-XL
        self.r_s_bias = nn.Parameter(torch.zeros(num_heads, self.head_dim))  # b of §2.5
        self.seg_embed = nn.Parameter(torch.zeros(2, num_heads, self.head_dim))  # s_+ (same), s_- (different)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = Dropout(dropout)
        self.attention_dropout = attention_dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, n, T, d)

    def keys(self, context: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Content keys and values over memory + segment (B, K, H), position keys over (K + T, H):
        computed once per layer and shared by both streams."""
        k_r = self.r(positions).view(-1, self.num_heads, self.head_dim).transpose(0, 1)  # (n, K + T, d)
        return self._heads(self.k(context)), self._heads(self.v(context)), k_r

    def scores_bias(self, q: torch.Tensor, k_r: torch.Tensor, k_len: int, segments: torch.Tensor | None,
                    masked: torch.Tensor | None) -> torch.Tensor:
        """Everything added to the content term q.k, already scaled: position and segment terms and
        the mask, (B, n, T, K). `segments` (B, T, K) bool = different segment; `masked` (B, T, K) bool."""
        scale = self.head_dim ** -0.5
        position = shift_relative(torch.matmul(q + self.r_r_bias[:, None], k_r.transpose(-1, -2)), k_len)
        bias = position
        if segments is not None:
            # (B, n, T, 2): each query against s_+ and s_-, then picked per key by same/different segment
            seg = torch.einsum("bntd,snd->bnts", q + self.r_s_bias[:, None], self.seg_embed)
            same, diff = seg.unbind(-1)
            bias = bias + torch.where(segments[:, None], diff[..., None], same[..., None])
        bias = bias * scale
        if masked is not None:
            bias = bias.masked_fill(masked[:, None], MASKED)  # (ac + bd + ef) * scale - 1e30 rounds to -1e30
        return bias

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_r: torch.Tensor,
               segments: torch.Tensor | None, masked: torch.Tensor | None) -> torch.Tensor:
        """(B, n, T, d) queries -> (B, n, T, d) attention output."""
        bias = self.scores_bias(q, k_r, k.shape[-2], segments, masked)
        p = self.attention_dropout if self.training else 0.0
        out, _ = attend(q + self.r_w_bias[:, None], k, v, AttnMask(bias=bias), p)
        return out

    def output(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = heads.shape
        y = self.o(heads.transpose(1, 2).reshape(B, T, -1))  # (B, T, n d) -> (B, T, H)
        return self.norm(x + self.drop(y))

    def forward(self, h: torch.Tensor, g: torch.Tensor | None, keys: tuple[torch.Tensor, ...],
                segments: torch.Tensor | None, mask_h: torch.Tensor | None, mask_g: torch.Tensor | None,
                target_mapping: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both streams over the same keys (§2.3): the content stream h (B, T, H) with `mask_h`, the
        query stream g (B, M, H) with `mask_g`. g's rows are moved to their positions through
        `target_mapping` (B, M, T) before attending and back after (the reference's einsums)."""
        k, v, k_r = keys
        out_h = self.output(h, self.attend(self._heads(self.q(h)), k, v, k_r, segments, mask_h))
        if g is None:
            return out_h, None
        q_g = self._heads(self.q(g))  # (B, n, M, d)
        if target_mapping is not None:
            q_g = torch.einsum("bnmd,bmt->bntd", q_g, target_mapping)  # (B, n, T, d) at the positions
        heads_g = self.attend(q_g, k, v, k_r, segments, mask_g)
        if target_mapping is not None:
            heads_g = torch.einsum("bntd,bmt->bnmd", heads_g, target_mapping)  # back to (B, n, M, d)
        return out_h, self.output(g, heads_g)
