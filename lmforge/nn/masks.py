"""Attention masks for `scaled_dot_product_attention`: bool, True = may attend."""

from __future__ import annotations

import torch


def attention_mask_for_sdpa(
    padding_mask: torch.Tensor | None, causal: bool, seq_len: int
) -> tuple[torch.Tensor | None, bool]:
    """Turn a (B, T) 1/0 padding mask into what SDPA takes: (mask, is_causal).

    Without padding no mask is built: encoders attend everywhere and decoders use SDPA's
    `is_causal`, which lets the fused kernels run.
    """
    if padding_mask is None or bool(padding_mask.all()):
        return None, causal
    keys = padding_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    if not causal:
        return keys, False
    device = padding_mask.device
    tril = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()  # (T, T)
    visible = keys & tril  # (B, 1, T, T)
    # A left-padded query can see no real key at all; letting it see itself keeps its softmax
    # finite (its output is padding and never used). Only such rows get the diagonal: a padding
    # query after real tokens sees those, as in transformers, whose QA/token losses read them.
    diag = torch.eye(seq_len, dtype=torch.bool, device=device)
    return visible | (diag & ~visible.any(dim=-1, keepdim=True)), False  # (B, 1, T, T)
