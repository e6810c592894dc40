"""Token + position (+ segment) embeddings, optional LayerNorm and ALBERT/ELECTRA projection.

Positions are a learned table, or a fixed sinusoid (Vaswani et al. §3.5) in one of two layouts:
interleaved (DistilBERT keeps it as a frozen table in its checkpoints) or sin/cos halves (Marian,
recomputed from the config and never stored, as HF drops it on save)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.nn.dropout import Dropout


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """Vaswani et al. 2017 §3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table.float()


def sinusoidal_halves_table(num_positions: int, dim: int) -> torch.Tensor:
    """Vaswani et al. §3.5 in Marian's layout (HF `MarianSinusoidalPositionalEmbedding`): column j of
    the sinusoid has angle pos / 10000^(2 floor(j/2) / d); the even columns' sines fill the first
    ceil(d/2) dims, the odd columns' cosines the rest. Computed in float64 as HF does, then float32."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim  # (d,)
    angle = position / torch.pow(torch.tensor(10000.0, dtype=torch.float64), exponent)  # (P, d)
    return torch.cat([torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])], dim=1).float()


class SinusoidalPositions(nn.Module):
    """A fixed position table that is a non-persistent buffer: not a parameter, not in the state dict
    (HF's Marian checkpoints do not store it), rebuilt from the config on construction."""

    def __init__(self, num_positions: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_halves_table(num_positions, dim), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(position_ids, self.table)  # (B, T, d)


class Embeddings(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.embedding_size
        self.position_offset = config.position_offset
        self.pad_token_id = config.pad_token_id
        self.tok = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        # Vaswani et al. §3.4: token embeddings multiplied by sqrt(d_model), so they are not swamped by
        # the unit-amplitude sinusoid they are added to
        self.scale = math.sqrt(dim) if config.scale_embeddings else None
        self.pos: nn.Module | None
        if not config.absolute_positions:  # T5: positions enter through the attention bias only
            self.pos = None
        elif config.sinusoidal_positions and config.sinusoidal_layout == "halves":
            self.pos = SinusoidalPositions(config.num_positions, dim)
        else:
            self.pos = nn.Embedding(config.num_positions, dim)
            if config.sinusoidal_positions:
                self.pos.weight.data.copy_(sinusoidal_table(config.num_positions, dim))
                self.pos.weight.requires_grad_(False)
        self.seg = nn.Embedding(config.type_vocab_size, dim) if config.type_vocab_size > 0 else None
        self.norm = nn.LayerNorm(dim, eps=config.layer_norm_eps) if config.embedding_norm else None
        self.drop = Dropout(config.dropout)
        self.proj = nn.Linear(dim, config.hidden_size) if dim != config.hidden_size else None

    def position_ids(self, input_ids: torch.Tensor, past: int = 0) -> torch.Tensor:
        if self.position_offset:
            # RoBERTa: real tokens count up from pad_token_id + 1, padding keeps pad_token_id
            real = input_ids.ne(self.pad_token_id).long()
            return torch.cumsum(real, dim=1) * real + self.pad_token_id
        return torch.arange(past, past + input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past: int = 0) -> torch.Tensor:
        """`past`: positions already in a KV cache, so new tokens continue from there; explicit
        `position_ids` (B, T) override both (generation from left-padded prompts)."""
        x = self.tok(input_ids)  # (B, T, E)
        if self.scale is not None:
            x = x * self.scale
        if self.pos is not None:
            if position_ids is None:
                position_ids = self.position_ids(input_ids, past)
            x = x + self.pos(position_ids)
        if self.seg is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.seg(token_type_ids)
        if self.norm is not None:
            x = self.norm(x)
        x = self.drop(x)
        if self.proj is not None:
            x = self.proj(x)  # (B, T, H)
        return x
