"""Encoder-decoder (Vaswani et al. 2017 §3.1): a bidirectional encoder and a causal decoder whose
layers add cross-attention over the encoder's states; both built from the one Transformer stack.

The token table is shared by encoder, decoder and (when tied) the output projection (§3.4).
`encode` runs once per source; `decode` runs per target step with a KV cache whose cross-attention
keys/values are computed on the first step and reused (lmforge.nn.cache).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.models.backbone import Backbone, BackboneOutput
from lmforge.nn.cache import KVCache
from lmforge.nn.init import init_weights


class EncoderDecoder(nn.Module):
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")

    def __init__(self, config: ModelConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        self.encoder = Backbone(config.replace(num_decoder_layers=0), init=False)
        decoder = config.replace(num_decoder_layers=0, num_layers=config.num_decoder_layers, causal=True,
                                 num_layer_groups=0)
        self.decoder = Backbone(decoder, init=False, cross_attention=True)
        self.decoder.embeddings.tok = self.encoder.embeddings.tok  # one token table (§3.4)
        self.pooler = None
        if init:
            init_weights(self, config)

    # ------------------------------------------------------------------ protocol
    @property
    def embeddings(self) -> nn.Module:
        """The encoder's embeddings, whose token table the decoder shares (a property: not registered
        twice, so the state dict keeps one name per tensor)."""
        return self.encoder.embeddings

    def input_embeddings(self) -> nn.Embedding:
        return self.encoder.embeddings.tok

    def set_input_embeddings(self, table: nn.Embedding) -> None:
        self.encoder.set_input_embeddings(table)
        self.decoder.set_input_embeddings(table)

    def num_hidden_states(self) -> int:
        return self.decoder.num_hidden_states()

    def max_length(self) -> int:
        return self.decoder.max_length()

    def shard_units(self) -> list[nn.Module]:
        return self.encoder.shard_units() + self.decoder.shard_units()

    # ------------------------------------------------------------------ forward
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               output_hidden_states: bool = False) -> BackboneOutput:
        return self.encoder(input_ids, attention_mask, None, output_hidden_states)

    def decode(self, decoder_input_ids: torch.Tensor, encoder_output: BackboneOutput,
               decoder_attention_mask: torch.Tensor | None = None, *, cache: KVCache | None = None,
               position_ids: torch.Tensor | None = None, output_hidden_states: bool = False,
               output_attentions: bool = False) -> BackboneOutput:
        out = self.decoder(decoder_input_ids, decoder_attention_mask, None, output_hidden_states,
                           position_ids=position_ids, cache=cache, memory=encoder_output.last_hidden_state,
                           memory_mask=encoder_output.attention_mask, output_attentions=output_attentions)
        out.encoder = encoder_output
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool = False, *, cache: KVCache | None = None,
                encoder_output: BackboneOutput | None = None, output_attentions: bool = False) -> BackboneOutput:
        """Teacher forcing: decoder_input_ids are the targets shifted right (the data collator builds them)."""
        if decoder_input_ids is None:
            raise ValueError("an encoder-decoder needs decoder_input_ids (the shifted targets)")
        if encoder_output is None:
            encoder_output = self.encode(input_ids, attention_mask, output_hidden_states)
        return self.decode(decoder_input_ids, encoder_output, decoder_attention_mask, cache=cache,
                           output_hidden_states=output_hidden_states, output_attentions=output_attentions)
