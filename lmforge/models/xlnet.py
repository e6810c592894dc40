"""XLNet's backbone (Yang et al. 2019): two-stream self-attention (§2.3) with Transformer-XL relative
positions and segment recurrence (§2.4) and relative segment encodings (§2.5); post-LN blocks.

Streams (§2.3): the content stream h starts from the token embeddings and may see the token at its
own position; the query stream g starts from one learned vector (`mask_emb`, the reference's name)
and sees only the context its position is allowed, never its own token. Both share every weight.
Who sees whom is `perm_mask` (B, T, T), 1 = query i may not see key j, as HF and the reference take
it: padding keys are added to it, and the content stream always sees its own position.
`target_mapping` (B, M, T) one-hot rows name the M positions the query stream predicts; without it
there is no query stream (fine-tuning, §3.3: the content stream only).

Memory (§2.4): with `mem_len > 0` each layer's input states of a segment are kept (the last `mem_len`
of previous + current, no gradient) and prepended to the next segment's keys, all visible, in
segment 0 (the reference's `mem_pad`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.models.backbone import BackboneOutput
from lmforge.models.xlnet_attention import QueryRows, RelativeAttention, relative_positions
from lmforge.nn.dropout import Dropout
from lmforge.nn.feedforward import FeedForward
from lmforge.xlnet_config import XLNetConfig


@dataclass
class XLNetOutput(BackboneOutput):
    """The content stream is `last_hidden_state`/`hidden_states` (what fine-tuning heads read)."""

    query: torch.Tensor | None = None  # (B, M, H) final query stream, with target_mapping
    query_hidden_states: tuple[torch.Tensor, ...] | None = None  # query-stream input of each layer + output
    mems: tuple[torch.Tensor, ...] | None = None  # per layer (B, mem_len, H), with config.mem_len > 0


def query_rows(target_mapping: torch.Tensor, mask_g: torch.Tensor | None,
               segments: torch.Tensor | None) -> QueryRows:
    """The predicted positions of a (B, M, T) target mapping, whose rows must be one-hot (or all zero:
    padding) with each position predicted at most once, as the reference builds it."""
    binary = bool(((target_mapping == 0) | (target_mapping == 1)).all())
    if not (binary and bool((target_mapping.sum(-1) <= 1).all()) and bool((target_mapping.sum(1) <= 1).all())):
        raise ValueError("target_mapping rows must be one-hot (or all zero for padding), each position "
                         "predicted at most once")
    positions = target_mapping.argmax(-1)  # (B, M); a zero row reads position 0, then is zeroed
    valid = target_mapping.sum(-1)  # (B, M) 1 = a real prediction

    def rows(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None or x.shape[1] == 1:  # None, or a padding-only mask that is the same for every row
            return x
        return x.gather(1, positions[:, :, None].expand(-1, -1, x.shape[-1]))  # (B, M, K)

    return QueryRows(positions, valid, rows(mask_g), rows(segments))


class XLNetLayer(nn.Module):
    """Relative attention then the feed-forward sublayer, each post-LN, applied to both streams."""

    def __init__(self, config: XLNetConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.attn = RelativeAttention(h, config.num_heads, config.dropout, config.attention_dropout,
                                      config.layer_norm_eps)
        # the reference drops out the FFN's inner activation with the same rate
        self.mlp = FeedForward(h, config.intermediate_size, config.activation, inner_dropout=config.dropout)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.drop = Dropout(config.dropout)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.mlp(x)))

    def forward(self, h: torch.Tensor, g: torch.Tensor | None, context: torch.Tensor, positions: torch.Tensor,
                segments: torch.Tensor | None, mask_h: torch.Tensor | None,
                query: QueryRows | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        keys = self.attn.keys(context, positions)
        h, g = self.attn(h, g, keys, segments, mask_h, query)
        return self.ffn(h), (self.ffn(g) if g is not None else None)


class TokenEmbeddings(nn.Module):
    """XLNet's input layer is the token table alone: positions are relative, added in every layer
    (§2.4), and segments are relative too (§2.5). Named as the shared Backbone's `embeddings.tok`."""

    def __init__(self, vocab_size: int, hidden: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, hidden)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.tok(input_ids)


class XLNetBackbone(nn.Module):
    """The backbone protocol of lmforge.models.backbone over XLNet."""

    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids", "perm_mask",
                                    "target_mapping", "mems")

    def __init__(self, config: XLNetConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = TokenEmbeddings(config.vocab_size, config.hidden_size)
        self.mask_emb = nn.Parameter(torch.zeros(1, 1, config.hidden_size))  # the query stream's start, g^(0)
        self.layers = nn.ModuleList(XLNetLayer(config) for _ in range(config.num_layers))
        self.drop = Dropout(config.dropout)
        if init:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's initializer: every weight N(0, initializer_range), biases 0, LayerNorm 1/0."""
        std = self.config.initializer_range
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=std)
                    if getattr(module, "bias", None) is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.LayerNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)
                elif isinstance(module, RelativeAttention):
                    for param in (module.r_w_bias, module.r_r_bias, module.r_s_bias, module.seg_embed):
                        nn.init.normal_(param, std=std)
            nn.init.normal_(self.mask_emb, std=std)

    # ------------------------------------------------------------------ protocol
    def input_embeddings(self) -> nn.Embedding:
        return self.embeddings.tok

    def set_input_embeddings(self, table: nn.Embedding) -> None:
        self.embeddings.tok = table

    def num_hidden_states(self) -> int:
        return self.config.num_layers + 1

    def max_length(self) -> int:
        return self.config.max_position_embeddings

    def shard_units(self) -> list[nn.Module]:
        return list(self.layers)

    # ------------------------------------------------------------------ forward
    @staticmethod
    def masks(attention_mask: torch.Tensor | None, perm_mask: torch.Tensor | None, seq: int,
              mem: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(content, query) masks, bool (B, T or 1, mem + T), True = may not attend; None = see all.
        Query stream: perm_mask plus padding keys; content stream: the same except its own position
        (§2.3: h_i encodes x_i itself). Memory is visible to all."""
        hidden = None
        if attention_mask is not None:
            hidden = (attention_mask == 0)[:, None, :]  # (B, 1, T): padding keys
        if perm_mask is not None:
            perm = perm_mask > 0  # (B, T, T)
            hidden = perm if hidden is None else hidden | perm
        if hidden is None:
            return None, None
        if mem:
            hidden = torch.cat([hidden.new_zeros(*hidden.shape[:2], mem), hidden], dim=-1)
        own = torch.zeros(seq, mem + seq, dtype=torch.bool, device=hidden.device)
        own[:, mem:] = torch.eye(seq, dtype=torch.bool, device=hidden.device)  # (T, K): query i at key mem + i
        return hidden & ~own, hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False, *,
                perm_mask: torch.Tensor | None = None, target_mapping: torch.Tensor | None = None,
                mems: tuple[torch.Tensor, ...] | list[torch.Tensor] | None = None) -> XLNetOutput:
        """input_ids (B, T); perm_mask (B, T, T); target_mapping (B, M, T); mems per layer (B, mem, H)."""
        B, T = input_ids.shape
        if mems is not None and len(mems) != self.config.num_layers:
            raise ValueError(f"mems has {len(mems)} entries; the model has {self.config.num_layers} layers")
        mem = mems[0].shape[1] if mems is not None else 0
        if perm_mask is not None and perm_mask.shape != (B, T, T):
            raise ValueError(f"perm_mask must be (batch, seq, seq) = {(B, T, T)}, got {tuple(perm_mask.shape)}")
        if target_mapping is not None and (target_mapping.dim() != 3 or target_mapping.shape[::2] != (B, T)):
            raise ValueError(f"target_mapping must be (batch, num_predict, seq) with batch {B}, seq {T}; "
                             f"got {tuple(target_mapping.shape)}")
        mask_h, mask_g = self.masks(attention_mask, perm_mask, T, mem)
        segments = None
        if token_type_ids is not None:  # §2.5: only whether two positions share a segment matters
            keys = torch.cat([token_type_ids.new_zeros(B, mem), token_type_ids], dim=1) if mem else token_type_ids
            segments = token_type_ids[:, :, None] != keys[:, None, :]  # (B, T, K)
        h = self.drop(self.embeddings(input_ids))
        g = query = None
        if target_mapping is not None:
            query = query_rows(target_mapping, mask_g, segments)
            g = self.drop(self.mask_emb.expand(B, target_mapping.shape[1], -1))
        positions = self.drop(relative_positions(T, mem + T, self.config.hidden_size, self.config.clamp_len,
                                                 h.device, h.dtype))  # (K + T, H)
        states, query_states, new_mems = [], [], []
        for i, layer in enumerate(self.layers):
            if self.config.mem_len:
                kept = h if mems is None else torch.cat([mems[i], h], dim=1)
                new_mems.append(kept[:, -self.config.mem_len:].detach())
            states.append(h)
            query_states.append(g)
            context = h if mems is None else torch.cat([mems[i], h], dim=1)  # (B, K, H)
            h, g = layer(h, g, context, positions, segments, mask_h, query)
        states.append(h)
        query_states.append(g)
        return XLNetOutput(
            last_hidden_state=self.drop(h), attention_mask=attention_mask,
            hidden_states=tuple(states) if output_hidden_states else None,
            query=self.drop(g) if g is not None else None,
            query_hidden_states=tuple(query_states) if output_hidden_states and g is not None else None,
            mems=tuple(new_mems) if self.config.mem_len else None,
        )
