"""T5's relative position bias (Raffel et al. 2020 §2.1), added to the attention scores through `AttnMask.bias`.

"Each 'embedding' is simply a scalar that is added to the corresponding logit used for computing the
attention weights ... we share the position embedding parameters across all layers ... each attention
head uses a different learned position embedding ... we use 32 embeddings ... with ranges that increase in
size logarithmically up to an offset of 128 beyond which we assign all relative positions to the same
embedding." The bucketing below follows the reference implementation (Mesh TensorFlow's
`_relative_position_bucket`): half the buckets hold exact small distances, the other half log-spaced
ranges; a bidirectional stack (the encoder) gives keys before and after the query their own halves, a
causal one (the decoder's self-attention) only looks back. One table per stack, shared by its layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def relative_position_bucket(distance: torch.Tensor, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """Bucket of each key - query distance (any shape, int64): values in [0, num_buckets)."""
    offset = torch.zeros_like(distance)
    if bidirectional:
        num_buckets //= 2
        offset = (distance > 0).long() * num_buckets  # keys after the query use the upper half
        distance = distance.abs()
    else:
        distance = (-distance).clamp(min=0)  # a causal stack never sees keys after the query
    exact = num_buckets // 2
    # log(d / exact) / log(max_distance / exact) spreads [exact, max_distance) over the other half
    spread = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    far = (exact + (spread * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return offset + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """A (buckets, heads) table; `forward` gives the (1, heads, Tq, Tk) bias for queries at positions
    past .. past + Tq - 1 over keys 0 .. Tk - 1 (under a KV cache the queries are the newest positions)."""

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, bidirectional: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_buckets, num_heads))
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def forward(self, q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
        queries = torch.arange(k_len - q_len, k_len, device=device)[:, None]  # (Tq, 1)
        keys = torch.arange(k_len, device=device)[None, :]  # (1, Tk)
        buckets = relative_position_bucket(keys - queries, self.bidirectional, self.num_buckets, self.max_distance)
        bias = self.weight[buckets]  # (Tq, Tk, nh)
        return bias.permute(2, 0, 1).unsqueeze(0)  # (1, nh, Tq, Tk)
