"""The Transformer stack shared by the whole family: encoder (bidirectional), decoder (causal, with a
KV cache), or — with cross-attention — the decoder half of an encoder-decoder (lmforge.models.seq2seq).

Layer i runs block `i * num_blocks // num_layers`, so ALBERT's cross-layer sharing (§3.1)
is one list of fewer blocks, not a separate model.

Every backbone meets one protocol, which TaskModel, heads, training and generation rely on:
`input_names` (the batch keys it consumes), `input_embeddings()` (the token table heads tie to),
`num_hidden_states()`, `max_length()`, `shard_units()` (what FSDP wraps) and
`forward(**inputs) -> BackboneOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.nn.block import Block
from lmforge.nn.cache import KVCache
from lmforge.nn.dropout import Dropout
from lmforge.nn.embeddings import Embeddings
from lmforge.nn.init import init_weights
from lmforge.nn.masks import NO_MASK, AttnMask, cross_attention_mask, self_attention_mask
from lmforge.nn.norms import build_norm
from lmforge.nn.relative_position import RelativePositionBias


@dataclass
class BackboneOutput:
    last_hidden_state: torch.Tensor  # (B, T, H)
    attention_mask: torch.Tensor | None  # (B, T), 1 = real token
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + one per layer
    pooled: torch.Tensor | None = None  # (B, H) pooler output, where the family has one
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, nh, T, Tk) scores before softmax
    cache: KVCache | None = None  # the cache this call extended (decoding)
    encoder: BackboneOutput | None = None  # an encoder-decoder's encoder output


class Pooler(nn.Module):
    """BERT §3: a dense + tanh over the first token's final hidden state."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class Backbone(nn.Module):
    """Embeddings, `num_layers` blocks, an optional final norm (pre-LN) and pooler (BERT)."""

    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, config: ModelConfig, init: bool = True, cross_attention: bool = False) -> None:
        super().__init__()
        self.config = config
        spec = config.layer_spec()
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(spec, cross_attention) for _ in range(config.num_blocks))
        pre = config.norm_position == "pre"
        self.norm_f = build_norm(spec.norm, config.hidden_size, config.layer_norm_eps, spec.bias) if pre else None
        self.drop_f = Dropout(config.dropout) if config.final_dropout else None  # T5: after the final norm
        self.pooler = Pooler(config.hidden_size) if config.pooler else None
        # T5 §2.1: one relative-position table per stack, shared by its layers (bidirectional in an
        # encoder, looking back only in a causal decoder); added to every self-attention's scores
        self.relative_bias = (RelativePositionBias(config.relative_attention_buckets,
                                                   config.relative_attention_max_distance, config.num_heads,
                                                   bidirectional=not config.causal)
                              if config.relative_attention_buckets else None)
        if init:
            init_weights(self, config)

    # ------------------------------------------------------------------ protocol
    def input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok

    def set_input_embeddings(self, table: nn.Embedding) -> None:
        self.embeddings.tok = table

    def num_hidden_states(self) -> int:
        return self.config.num_layers + 1  # embeddings + one per layer

    def max_length(self) -> int:
        return self.config.max_position_embeddings - self.config.position_offset

    def shard_units(self) -> list[nn.Module]:
        """FSDP units: each block, unless blocks are shared across layers (ALBERT), where a unit called
        several times per forward would be gathered and freed once per call for no memory gain."""
        return list(self.layers) if self.config.num_blocks == self.config.num_layers else []

    def layer_for(self, index: int) -> Block:
        return self.layers[index * self.config.num_blocks // self.config.num_layers]

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        *,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> BackboneOutput:
        """With a `cache`, `input_ids` are the new tokens only and `attention_mask` covers the cached
        positions too (B, past + T), as in transformers. `memory`/`memory_mask`: encoder states for
        cross-attention."""
        past = cache.length if cache is not None else 0
        seq = input_ids.shape[1]
        if past + seq > self.max_length():
            raise ValueError(f"sequence length {past + seq} exceeds the model's {self.max_length()} positions")
        mask = self_attention_mask(attention_mask, self.config.causal, seq, past + seq, input_ids.device)
        if self.relative_bias is not None:
            mask = mask.with_bias(self.relative_bias(seq, past + seq, input_ids.device)).folded()
        x = self.embeddings(input_ids, token_type_ids, position_ids, past)
        new_mask = attention_mask[:, past:] if attention_mask is not None else None
        out = self.run_layers(x, mask, memory=memory, memory_mask=cross_attention_mask(memory_mask), cache=cache,
                              output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        out.attention_mask = new_mask
        if cache is not None:
            cache.advance(seq)
        return out

    def run_layers(self, x: torch.Tensor, mask: AttnMask, *, memory: torch.Tensor | None = None,
                   memory_mask: AttnMask = NO_MASK, cache: KVCache | None = None,
                   output_hidden_states: bool = False, output_attentions: bool = False) -> BackboneOutput:
        states = [x] if output_hidden_states else None
        scores = [] if output_attentions else None
        for i in range(self.config.num_layers):
            x, layer_scores = self.layer_for(i)(x, mask, memory=memory, memory_mask=memory_mask, cache=cache,
                                                layer=i, need_weights=output_attentions)
            if states is not None:
                states.append(x)
            if scores is not None:
                scores.append(layer_scores)
        if self.norm_f is not None:
            x = self.norm_f(x)
            if states is not None:
                states[-1] = x  # the last state is the normalised output, as GPT-2 reports it
        if self.drop_f is not None:
            x = self.drop_f(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BackboneOutput(
            last_hidden_state=x,
            attention_mask=None,
            hidden_states=tuple(states) if states is not None else None,
            pooled=pooled,
            attentions=tuple(scores) if scores is not None else None,
            cache=cache,
        )
