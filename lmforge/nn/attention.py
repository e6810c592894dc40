"""Multi-head attention — self or cross, with a KV cache — and the one function that computes it.

`attend` chooses between `F.scaled_dot_product_attention` (fused kernels) and the same arithmetic
written out, which runs when the scores are wanted (distillation reads them) or when dropping
attention probabilities on CPU, where SDPA falls back to its math path and draws its mask with
`bernoulli_`; the written-out path uses lmforge's cheaper dropout mask (lmforge.nn.dropout).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.nn.cache import KVCache
from lmforge.nn.dropout import dropout
from lmforge.nn.masks import NO_MASK, AttnMask, causal_keep


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask = NO_MASK, dropout_p: float = 0.0,
           scale: float | None = None, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax(q k^T * scale + bias, masked) @ v for (B, nh, Tq, hd) queries and (B, nh, Tk, hd) keys/values.

    scale None = 1/sqrt(hd) (Vaswani et al. §3.2.1); T5 passes 1.0 (its init absorbs it). Returns the
    output (B, nh, Tq, hd) and, with need_weights, the scores before masking and softmax (B, nh, Tq, Tk)."""
    if need_weights or (dropout_p > 0.0 and q.device.type == "cpu") or _written_out_trains_faster(q, k):
        return written_out_attention(q, k, v, mask, dropout_p, scale)
    attn_mask, is_causal = mask.for_sdpa(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                          dropout_p=dropout_p, scale=scale), None


# Largest Tq x Tk for which `_written_out_trains_faster` holds (measured below).
WRITTEN_OUT_MAX_SCORES = 256 * 256


def _written_out_trains_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
    """On CPU, SDPA's half-precision kernels are slow to differentiate at short lengths: forward and
    backward of (8, 4, T, 64) bf16 on the 2-core CPU took 8.6 ms (SDPA) against 3.3 (written out) at a
    causal T = 128, 13.7 against 6.8 at a full T = 256, 2.5 against 1.6 for T5's 29 x 128 cross-attention,
    but 15.6 against 17.6 at a causal T = 512, and written out keeps Tq x Tk probabilities for the backward.
    In fp32 the two are within 10%, and without gradients SDPA is faster."""
    return (q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and torch.is_grad_enabled()
            and q.requires_grad and q.shape[-2] * k.shape[-2] <= WRITTEN_OUT_MAX_SCORES)


def written_out_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask, dropout_p: float,
                          scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What SDPA computes, step by step: returns the output and the scores (before mask and softmax)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = torch.matmul(q, k.transpose(-1, -2))
    if scale != 1.0:  # T5's is 1: no pass over the scores
        scores = scores.mul_(scale)
    if mask.bias is not None:
        scores = scores + mask.bias  # (B, nh, Tq, Tk)
    keep = causal_keep(q.shape[-2], k.shape[-2], q.device) if mask.is_causal else mask.keep
    masked = scores if keep is None else scores.masked_fill(~keep, float("-inf"))
    probs = dropout(masked.softmax(dim=-1), dropout_p, training=dropout_p > 0.0)
    return torch.matmul(probs, v), scores  # (B, nh, Tq, hd), (B, nh, Tq, Tk)


def attention_with_dropout(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                           is_causal: bool, p: float) -> torch.Tensor:
    """The written-out path with a plain SDPA-style (mask, is_causal) pair."""
    return written_out_attention(q, k, v, AttnMask(keep=mask, is_causal=is_causal), p, None)[0]


class Attention(nn.Module):
    """Self-attention projects q, k, v with one fused Linear (one matmul instead of three); cross-attention
    projects q from the decoder and a fused k, v from the encoder's states (`memory`).

    Cross-attention's memory may have fewer rows than the queries: each memory row then serves
    rows(x) / rows(memory) consecutive query rows (beam search's beams of one source, lmforge.generate).
    Those queries attend to it as one (g x T)-query row, so the source is encoded, projected to keys and
    values, and read once per source instead of once per beam.

    `layer` names the cache slot: it is passed at call time because ALBERT runs one block as many layers."""

    def __init__(self, dim: int, num_heads: int, dropout_p: float, *, cross: bool = False,
                 kv_dim: int | None = None, head_dim: int | None = None, bias: bool = True,
                 scale: float | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.num_heads * self.head_dim
        self.dropout = dropout_p
        self.scale = scale
        self.cross = cross
        if cross:
            self.q = nn.Linear(dim, inner, bias=bias)
            self.kv = nn.Linear(kv_dim or dim, 2 * inner, bias=bias)
        else:
            self.qkv = nn.Linear(dim, 3 * inner, bias=bias)
        self.out = nn.Linear(inner, dim, bias=bias)
        self.out.residual_output = True  # init role (lmforge.nn.init): writes into the residual stream

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        batch, seq, _ = x.shape
        x = x.view(batch, seq, parts, self.num_heads, self.head_dim)  # (B, T, parts, nh, hd)
        return x.permute(2, 0, 3, 1, 4).unbind(0)  # parts x (B, nh, T, hd)

    def forward(self, x: torch.Tensor, mask: AttnMask = NO_MASK, *, memory: torch.Tensor | None = None,
                cache: KVCache | None = None, layer: int = 0,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, seq = x.shape[0], x.shape[1]
        group = 1
        if self.cross:
            (q,) = self._heads(self.q(x), 1)
            project = lambda: self._heads(self.kv(memory), 2)  # noqa: E731
            k, v = cache.cross(layer, project) if cache is not None else project()
            group = batch // k.shape[0]
            if group * k.shape[0] != batch:
                raise ValueError(f"{batch} query rows cannot share {k.shape[0]} memory rows evenly")
            if group > 1:  # (S*g, nh, T, hd) -> (S, nh, g*T, hd): the g rows of one source as one row
                q = q.view(k.shape[0], group, self.num_heads, seq, self.head_dim).transpose(1, 2)
                q = q.reshape(k.shape[0], self.num_heads, group * seq, self.head_dim)
        else:
            q, k, v = self._heads(self.qkv(x), 3)
            if cache is not None:
                k, v = cache.update(layer, k, v)
        p = self.dropout if self.training else 0.0
        y, scores = attend(q, k, v, mask, p, self.scale, need_weights)
        if group > 1:  # (S, nh, g*T, hd) -> (S, g, T, nh, hd)
            y = y.view(k.shape[0], self.num_heads, group, seq, self.head_dim).permute(0, 2, 3, 1, 4)
        else:
            y = y.transpose(1, 2)  # (B, T, nh, hd)
        y = y.reshape(batch, seq, self.num_heads * self.head_dim)  # (B, T, nh * hd)
        return self.out(y), scores
