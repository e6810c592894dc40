"""Attention masks: one small value that every attention layer takes.

`AttnMask` carries what a layer may attend to in up to three forms, each optional:
- `keep`: a bool tensor broadcastable to (B, heads, Tq, Tk), True = may attend (padding, the causal
  triangle under a KV cache, cross-attention padding, XLNet's two-stream masks);
- `bias`: a float tensor added to the scores (T5's relative position buckets, XLNet's relative terms);
- `is_causal`: SDPA's own top-left causal flag. It is only correct when queries and keys are the
  same positions (Tq == Tk, no cache), so the builders below set it only then.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttnMask:
    keep: torch.Tensor | None = None  # bool, broadcastable to (B, nh, Tq, Tk)
    bias: torch.Tensor | None = None  # float, broadcastable to (B, nh, Tq, Tk)
    is_causal: bool = False

    def with_bias(self, bias: torch.Tensor | None) -> AttnMask:
        """The same mask with an additive bias (a relative-position table) on top."""
        if bias is None:
            return self
        if self.is_causal:  # a bias cannot ride on SDPA's flag: spell the triangle out
            tq, tk = bias.shape[-2], bias.shape[-1]
            return AttnMask(keep=causal_keep(tq, tk, bias.device), bias=bias)
        return AttnMask(keep=self.keep, bias=bias if self.bias is None else self.bias + bias)

    def folded(self) -> AttnMask:
        """Keep and bias as one additive float tensor (masked scores get the dtype's minimum): built once
        per stack, so its layers do not each repeat the masked fill (T5's relative bias with padding)."""
        if self.bias is None or self.keep is None:
            return self
        return AttnMask(bias=self.bias.masked_fill(~self.keep, torch.finfo(self.bias.dtype).min))

    def for_sdpa(self, dtype: torch.dtype) -> tuple[torch.Tensor | None, bool]:
        """(attn_mask, is_causal) for `F.scaled_dot_product_attention`: a bool mask alone stays bool
        (the fused kernels take it); with a bias, one float mask holding both."""
        if self.bias is None:
            return self.keep, self.is_causal
        bias = self.bias.to(dtype)
        if self.keep is None:
            return bias, False
        return bias.masked_fill(~self.keep, torch.finfo(dtype).min), False


NO_MASK = AttnMask()


def causal_keep(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) bool: query i (the last Tq of Tk positions) sees keys 0 .. k_len - q_len + i."""
    past = k_len - q_len
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=past)


def self_attention_mask(padding_mask: torch.Tensor | None, causal: bool, q_len: int,
                        k_len: int | None = None, device: torch.device | None = None) -> AttnMask:
    """The mask of a self-attention layer.

    padding_mask: (B, Tk) 1/0 over every key (the cached ones too); None = no padding.
    q_len: new positions this call; k_len: all key positions (past + new; default q_len).
    Without padding no tensor is built: encoders attend everywhere, a decoder's prefill uses SDPA's
    `is_causal` (fused kernels), and a one-token decoding step needs no mask at all.
    """
    k_len = q_len if k_len is None else k_len
    # under torch.compile the all-ones check would be a graph break (a data-dependent branch): a given
    # padding mask is then always applied, as transformers does while tracing
    padded = padding_mask is not None and (torch.compiler.is_compiling() or not bool(padding_mask.all()))
    if not padded:
        if not causal or q_len == 1:
            return AttnMask()
        if q_len == k_len:
            return AttnMask(is_causal=True)
        device = padding_mask.device if padding_mask is not None else device
        return AttnMask(keep=causal_keep(q_len, k_len, device))
    keys = padding_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
    if not causal:
        return AttnMask(keep=keys)
    visible = keys & causal_keep(q_len, k_len, padding_mask.device)  # (B, 1, Tq, Tk)
    # A left-padded query can see no real key at all; letting it see itself keeps its softmax
    # finite (its output is padding and never used). Only such rows get the diagonal: a padding
    # query after real tokens sees those, as in transformers, whose QA/token losses read them.
    diag = _diagonal(q_len, k_len, padding_mask.device)
    return AttnMask(keep=visible | (diag & ~visible.any(dim=-1, keepdim=True)))


def _diagonal(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) bool: query i at its own key position k_len - q_len + i."""
    return torch.eye(q_len, k_len, dtype=torch.bool, device=device).roll(k_len - q_len, dims=-1)


def cross_attention_mask(memory_mask: torch.Tensor | None) -> AttnMask:
    """Decoder queries over encoder states: only the source padding is hidden. (B, Ts) 1/0."""
    if memory_mask is None or bool(memory_mask.all()):
        return AttnMask()
    return AttnMask(keep=memory_mask.bool()[:, None, None, :])  # (B, 1, 1, Ts)


def attention_mask_for_sdpa(padding_mask: torch.Tensor | None, causal: bool,
                            seq_len: int) -> tuple[torch.Tensor | None, bool]:
    """(mask, is_causal) of a cache-free self-attention layer, as SDPA takes them."""
    mask = self_attention_mask(padding_mask, causal, seq_len)
    return mask.keep, mask.is_causal
