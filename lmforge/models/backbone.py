"""The Transformer stack shared by the whole family: encoder (bidirectional) or decoder (causal).

Layer i runs block `i * num_blocks // num_layers`, so ALBERT's cross-layer sharing (§3.1)
is one list of fewer blocks, not a separate model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.block import Block
from lmforge.nn.embeddings import Embeddings
from lmforge.nn.init import init_weights
from lmforge.nn.masks import attention_mask_for_sdpa


@dataclass
class BackboneOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    attention_mask: torch.Tensor | None  # (B, T), 1 = real token
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + one per layer
    pooled: torch.Tensor | None = None  # (B, H) pooler output, where the family has one


class Pooler(nn.Module):
    """BERT §3: a dense + tanh over the first token's final hidden state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Backbone(nn.Module):
    def __init__(self, config: ModelConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_blocks))
        pre = config.norm_position == "pre"
        self.norm_f = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if pre else None
        self.pooler = Pooler(config.hidden_size) if config.pooler else None
        if init:
            init_weights(self, config)

    def layer_for(self, index: int) -> Block:
        return self.layers[index * self.config.num_blocks // self.config.num_layers]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BackboneOutput:
        if input_ids.shape[1] > self.config.max_position_embeddings - self.config.position_offset:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds the model's "
                f"{self.config.max_position_embeddings - self.config.position_offset} positions"
            )
        mask, is_causal = attention_mask_for_sdpa(attention_mask, self.config.causal, input_ids.shape[1])
        x = self.embeddings(input_ids, token_type_ids)
        states = [x] if output_hidden_states else None
        for i in range(self.config.num_layers):
            x = self.layer_for(i)(x, mask, is_causal)
            if states is not None:
                states.append(x)
        if self.norm_f is not None:
            x = self.norm_f(x)
            if states is not None:
                states[-1] = x  # the last state is the normalised output, as GPT-2 reports it
        pooled = self.pooler(x) if self.pooler is not None else None
        return BackboneOutput(
            last_hidden_state=x,
            attention_mask=attention_mask,
            hidden_states=tuple(states) if states is not None else None,
            pooled=pooled,
        )
