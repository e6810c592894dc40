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

from dataclasses import dataclass

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

    def position_scores(self, q: torch.Tensor, k_r: torch.Tensor, k_len: int,
                        query_pos: torch.Tensor | None) -> torch.Tensor:
        """(q + r_r) . W_r R_{i-j}, (B, n, Tq, K). Queries are the segment's T positions in order
        (`query_pos` None: the strided shift), or the positions `query_pos` (B, M) names (a gather)."""
        raw = torch.matmul(q + self.r_r_bias[:, None], k_r.transpose(-1, -2))  # (B, n, Tq, K + T)
        if query_pos is None:
            return shift_relative(raw, k_len)
        B, n, M, P = raw.shape
        index = (P - k_len - query_pos)[:, None, :, None] + torch.arange(k_len, device=raw.device)  # (B, 1, M, K)
        return raw.gather(-1, index.expand(B, n, M, k_len))  # raw[m, T - pos_m + j], as shift_relative

    def scores_bias(self, q: torch.Tensor, k_r: torch.Tensor, k_len: int, segments: torch.Tensor | None,
                    masked: torch.Tensor | None, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Everything added to the content term q.k, already scaled: position and segment terms and
        the mask, (B, n, Tq, K). `segments` (B, Tq, K) bool = different segment; `masked` (B, Tq or 1, K)
        bool, True = hidden."""
        scale = self.head_dim ** -0.5
        bias = self.position_scores(q, k_r, k_len, query_pos)
        if segments is not None:
            # (B, n, Tq, 2): each query against s_+ and s_-, then picked per key by same/different segment
            seg = torch.einsum("bntd,snd->bnts", q + self.r_s_bias[:, None], self.seg_embed)
            same, diff = seg.unbind(-1)
            bias = bias + torch.where(segments[:, None], diff[..., None], same[..., None])
        bias = bias * scale
        if masked is not None:
            bias = bias.masked_fill(masked[:, None], MASKED)  # (ac + bd + ef) * scale - 1e30 rounds to -1e30
        return bias

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_r: torch.Tensor,
               segments: torch.Tensor | None, masked: torch.Tensor | None,
               query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, n, Tq, d) queries -> (B, n, Tq, d) attention output."""
        bias = self.scores_bias(q, k_r, k.shape[-2], segments, masked, query_pos)
        p = self.attention_dropout if self.training else 0.0
        out, _ = attend(q + self.r_w_bias[:, None], k, v, AttnMask(bias=bias), p)
        return out

    def output(self, x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = heads.shape
        y = self.o(heads.transpose(1, 2).reshape(B, T, -1))  # (B, T, n d) -> (B, T, H)
        return self.norm(x + self.drop(y))

    def forward(self, h: torch.Tensor, g: torch.Tensor | None, keys: tuple[torch.Tensor, ...],
                segments: torch.Tensor | None, mask_h: torch.Tensor | None,
                query: QueryRows | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Both streams over the same keys (§2.3): the content stream h (B, T, H) with `mask_h`; the
        query stream g (B, M, H) only at the M predicted positions `query` names, with their rows of
        the query mask and segments (the reference computes g at all T positions through the one-hot
        target mapping and maps back: the same values, T/M times the work)."""
        k, v, k_r = keys
        out_h = self.output(h, self.attend(self._heads(self.q(h)), k, v, k_r, segments, mask_h))
        if g is None:
            return out_h, None
        heads_g = self.attend(self._heads(self.q(g)), k, v, k_r, query.segments, query.mask, query.positions)
        return out_h, self.output(g, heads_g * query.valid.to(heads_g.dtype)[:, None, :, None])  # a zero row attends to nothing


@dataclass(frozen=True)
class QueryRows:
    """The query stream's rows: positions (B, M) long; valid (B, M) float, 0 for the all-zero rows of
    a padded target mapping; mask (B, M or 1, K) bool or None; segments (B, M, K) bool or None."""

    positions: torch.Tensor
    valid: torch.Tensor
    mask: torch.Tensor | None
    segments: torch.Tensor | None
