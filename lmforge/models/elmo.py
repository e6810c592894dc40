"""ELMo's biLM backbone (Peters et al. 2018 §3; the bilm-tf reference): a character CNN token encoder
shared by a forward and a backward LSTM language model.

Token encoder (§3.4, bilm-tf `_build_word_char_embeddings`): each token's UTF-8 bytes as character
ids (`lmforge.elmo_chars`), a 16-dim character embedding, convolutions of several widths each
max-pooled over the characters, highway layers and a linear projection to the LSTM width. The
`word_embedding` encoder (bilm-tf `_build_word_embeddings`) is a (vocab, projection_dim) table instead:
the word-level LM the character CNN is compared with; everything after the token layer is shared.
biLM (§3.1): per direction `num_layers` LSTMs with a projection (cells -> projection_dim), cell and
projection clipping as TF's LSTMCell does, a residual connection around every layer but the first.
Hidden states (§3.2): the token layer duplicated for both directions, then each biLSTM layer with
forward and backward states concatenated: `num_layers + 1` states of 2 x projection_dim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lmforge.elmo_config import ElmoConfig
from lmforge.models.backbone import BackboneOutput


class Highway(nn.Module):
    """Srivastava et al. 2015 as bilm-tf writes it: g = sigmoid(x W_carry + b_carry),
    y = g * relu(x W_transform + b_transform) + (1 - g) * x; carry bias starts at -2 (bilm-tf)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.carry = nn.Linear(dim, dim)
        self.transform = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.carry(x))
        return gate * F.relu(self.transform(x)) + (1.0 - gate) * x


class CharCNN(nn.Module):
    """Character ids (N, W) -> token vectors (N, projection_dim). Padding tokens (all ids 0) are
    encoded like any other; the caller masks them."""

    def __init__(self, config: ElmoConfig) -> None:
        super().__init__()
        self.char_embedding = nn.Embedding(config.n_characters, config.char_embedding_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(config.char_embedding_dim, count, width)
                                   for width, count in config.filters)
        self.highways = nn.ModuleList(Highway(config.n_filters) for _ in range(config.n_highway))
        self.projection = nn.Linear(config.n_filters, config.projection_dim)
        self.activation = torch.relu if config.cnn_activation == "relu" else torch.tanh

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        chars = self.char_embedding(char_ids).transpose(1, 2)  # (N, W, E) -> (N, E, W)
        # bilm-tf: convolve, max over positions, then the activation
        x = torch.cat([self.activation(conv(chars).amax(dim=-1)) for conv in self.convs], dim=-1)  # (N, F)
        for highway in self.highways:
            x = highway(x)
        return self.projection(x)


class BiLstmLayer(nn.Module):
    """One layer of both directions' LSTMs, run in one time loop with the directions stacked (batched
    matmuls), as TF's LSTMCell(num_units, num_proj, cell_clip, proj_clip) computes them.

    nn.LSTM(proj_size=...) has the same cell and projection but no clipping, which bilm-tf's models use
    (cell_clip = proj_clip = 3), hence the explicit step. The input half of every gate is one matmul
    over all time steps before the loop; the loop keeps only the recurrent half (as cuDNN does).
    Gate order i, j, f, o and forget bias 1.0 follow TF's LSTMCell, whose weights this layout holds.
    """

    FORGET_BIAS = 1.0

    def __init__(self, input_dim: int, cells: int, projection: int, cell_clip: float, proj_clip: float) -> None:
        super().__init__()
        self.cells, self.cell_clip, self.proj_clip = cells, cell_clip, proj_clip
        self.w_input = nn.Parameter(torch.empty(2, input_dim, 4 * cells))  # direction 0 forward, 1 backward
        self.w_hidden = nn.Parameter(torch.empty(2, projection, 4 * cells))
        self.bias = nn.Parameter(torch.zeros(2, 4 * cells))
        self.w_projection = nn.Parameter(torch.empty(2, cells, projection))
        offset = torch.zeros(4 * cells)
        offset[2 * cells:3 * cells] = self.FORGET_BIAS  # the f block of i, j, f, o
        self.register_buffer("forget_offset", offset, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (2, B, T, I), the backward direction already time-reversed -> (2, B, T, P)."""
        D, B, T, _ = x.shape
        C = self.cells
        bias = self.bias + self.forget_offset  # TF's forget bias folded in once, not added per step
        gates_in = torch.baddbmm(bias.unsqueeze(1), x.reshape(D, B * T, -1), self.w_input)  # (2, B*T, 4C)
        # one view per step: unbind's backward stacks the step gradients once, where indexing
        # gates_in[:, :, t] would scatter each into a zero-filled (2, B, T, 4C) tensor (T^2 traffic)
        steps = gates_in.view(D, B, T, 4 * C).unbind(dim=2)
        h = x.new_zeros(D, B, self.w_projection.shape[-1])
        c = x.new_zeros(D, B, C)
        outputs = []
        for step in steps:
            gates = torch.baddbmm(step, h, self.w_hidden)  # (2, B, 4C)
            # chunk, not slices: its backward is one cat of the four gate gradients, where a slice's
            # zero-fills a (2, B, 4C) tensor per step (measured: 0.85x -> 0.93x of nn.LSTM at batch 128)
            i, j, f, o = gates.chunk(4, dim=-1)
            c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(j))
            if self.cell_clip:
                c = c.clamp(-self.cell_clip, self.cell_clip)
            h = torch.bmm(torch.sigmoid(o) * torch.tanh(c), self.w_projection)  # (2, B, P)
            if self.proj_clip:
                h = h.clamp(-self.proj_clip, self.proj_clip)
            outputs.append(h)
        return torch.stack(outputs, dim=2)  # (2, B, T, P)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `lengths[b]` steps of x (B, T, ...), leaving its padding in place;
    its own inverse, so the backward LM's outputs are put back in reading order with it."""
    T = x.shape[1]
    steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)  # (B, T)
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


class ElmoBackbone(nn.Module):
    """The backbone protocol of lmforge.models.backbone over ELMo's biLM. Inputs are `char_ids`
    (B, T, max_characters_per_token), and `input_ids` only give the batch shape (the word ids are the
    softmax targets, read by the `bilm` head); with the word encoder the `input_ids` are the input."""

    bidirectional_lm = True  # what objective bilm trains (lmforge.objectives.bilm)

    def __init__(self, config: ElmoConfig, init: bool = True) -> None:
        super().__init__()
        self.config = config
        if config.reads_characters:
            self.token_encoder: nn.Module = CharCNN(config)
            self.input_names: tuple[str, ...] = ("input_ids", "attention_mask", "char_ids")
        else:
            self.token_encoder = nn.Embedding(config.vocab_size, config.projection_dim, padding_idx=config.pad_token_id)
            self.input_names = ("input_ids", "attention_mask")
        P = config.projection_dim
        self.layers = nn.ModuleList(
            BiLstmLayer(P, config.lstm_dim, P, config.cell_clip, config.proj_clip) for _ in range(config.num_layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        if init:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """bilm-tf's initialisers: character embeddings U(-1, 1); conv N(0, 1/(width * E)); highway
        N(0, 1/F) with carry bias -2; projection N(0, 1/F); word embeddings and LSTM kernels Glorot-uniform
        (TF's default, which bilm-tf's `embedding` and LSTMCell variables get)."""
        with torch.no_grad():
            if self.config.reads_characters:
                self._reset_char_cnn()
            else:
                table = self.token_encoder.weight
                nn.init.uniform_(table, -math.sqrt(6.0 / sum(table.shape)), math.sqrt(6.0 / sum(table.shape)))
                if self.token_encoder.padding_idx is not None:
                    table[self.token_encoder.padding_idx].zero_()
            for layer in self.layers:
                fan_in = layer.w_input.shape[1] + layer.w_hidden.shape[1]  # TF's kernel is [input; h] x 4C
                bound = math.sqrt(6.0 / (fan_in + layer.w_input.shape[2]))
                nn.init.uniform_(layer.w_input, -bound, bound)
                nn.init.uniform_(layer.w_hidden, -bound, bound)
                nn.init.zeros_(layer.bias)
                bound = math.sqrt(6.0 / sum(layer.w_projection.shape[1:]))
                nn.init.uniform_(layer.w_projection, -bound, bound)

    def _reset_char_cnn(self) -> None:
        cnn, E, F_ = self.token_encoder, self.config.char_embedding_dim, self.config.n_filters
        nn.init.uniform_(cnn.char_embedding.weight, -1.0, 1.0)
        cnn.char_embedding.weight[0].zero_()
        for conv, (width, _) in zip(cnn.convs, self.config.filters):
            nn.init.normal_(conv.weight, std=math.sqrt(1.0 / (width * E)))
            nn.init.zeros_(conv.bias)
        for highway in cnn.highways:
            for linear, bias in ((highway.carry, -2.0), (highway.transform, 0.0)):
                nn.init.normal_(linear.weight, std=math.sqrt(1.0 / F_))
                nn.init.constant_(linear.bias, bias)
        nn.init.normal_(cnn.projection.weight, std=math.sqrt(1.0 / F_))
        nn.init.zeros_(cnn.projection.bias)

    # ------------------------------------------------------------------ protocol
    def input_embeddings(self) -> nn.Embedding:
        if self.config.reads_characters:
            raise ValueError("ELMo has no token embedding table: tokens are encoded from their characters")
        return self.token_encoder

    def num_hidden_states(self) -> int:
        return self.config.num_layers + 1  # token layer + one per biLSTM layer

    def max_length(self) -> int:
        return self.config.max_position_embeddings

    def shard_units(self) -> list[nn.Module]:
        return list(self.layers)

    def inputs_for_tokenizer(self, tokenizer) -> Callable[..., dict[str, torch.Tensor]]:
        """What the backbone reads besides token ids, made from them (lmforge.features and fine-tuning
        batches call this): each id's characters as the bilm objective spelt them in pre-training,
        padding tokens all 0. `texts` (one {position: text} per row, or None) spells the tokens a
        vocabulary lost to its unknown id from their text instead: characters are ELMo's open vocabulary.
        The word encoder reads the ids alone: nothing to add."""
        from lmforge.elmo_chars import token_char_ids, tokenizer_char_table
        from lmforge.tokenizers import special_tokens

        if not self.config.reads_characters:
            return lambda ids, mask, texts=None: {}

        width = self.config.max_characters_per_token
        table = torch.from_numpy(tokenizer_char_table(tokenizer, special_tokens(tokenizer), width).astype("int64"))

        def make(ids: torch.Tensor, mask: torch.Tensor,
                 texts: Sequence[dict[int, str] | None] | None = None) -> dict[str, torch.Tensor]:
            chars = table.to(ids.device)[ids] * mask.unsqueeze(-1).to(ids.dtype)  # (B, T, W)
            for row, spelt in enumerate(texts or ()):
                for position, text in (spelt or {}).items():
                    if position < chars.shape[1] and mask[row, position]:
                        chars[row, position] = torch.from_numpy(token_char_ids(text, width).astype("int64"))
            return {"char_ids": chars}

        return make

    # ------------------------------------------------------------------ forward
    def encode_tokens(self, input_ids: torch.Tensor | None, char_ids: torch.Tensor | None) -> torch.Tensor:
        """(B, T, W) character ids, or (B, T) word ids for the word encoder -> (B, T, P) context-independent
        token vectors."""
        if not self.config.reads_characters:
            if input_ids is None:
                raise ValueError("ELMo's word encoder needs input_ids (B, T)")
            return self.token_encoder(input_ids)
        if char_ids is None:
            raise ValueError("ELMo needs char_ids (B, T, max_characters_per_token) in the batch "
                             "(the backbone's inputs_for_tokenizer makes them)")
        B, T, W = char_ids.shape
        # A token's vector depends on its characters alone, so each distinct spelling is encoded once: a
        # 32 x 64 batch of Zipfian words holds ~800 distinct ones, and elmo-cpu's CNN forward + backward
        # went from ~300 to ~85 ms, of a ~1.8 s training step (bench/bench_elmo.py --token-encoder).
        spellings, which = torch.unique(char_ids.reshape(B * T, W), dim=0, return_inverse=True)  # (U, W), (B*T,)
        return self.token_encoder(spellings).index_select(0, which).view(B, T, -1)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_hidden_states: bool = False, *,
                char_ids: torch.Tensor | None = None) -> BackboneOutput:
        """The Transformer backbone's positional order (ids, mask, segments, output_hidden_states), so
        callers that pass those positionally work unchanged; the characters come by keyword."""
        if token_type_ids is not None:
            raise ValueError("ELMo has no segment embeddings: token_type_ids must be None")
        tokens = self.encode_tokens(input_ids, char_ids)  # (B, T, P)
        if attention_mask is None:  # a padding token's characters are all 0; bare word ids mark no padding
            attention_mask = (char_ids.ne(0).any(-1) if self.config.reads_characters
                              else torch.ones_like(input_ids, dtype=torch.bool)).long()
        lengths = attention_mask.long().sum(1)  # (B,) right padding
        states = [torch.cat([tokens, tokens], dim=-1)]  # §3.2: the token layer for both directions
        x = torch.stack([tokens, reverse_padded(tokens, lengths)])  # (2, B, T, P)
        for index, layer in enumerate(self.layers):
            y = layer(self.dropout(x))
            if index > 0 and self.config.use_skip_connections:
                y = y + x
            x = y
            states.append(torch.cat([x[0], reverse_padded(x[1], lengths)], dim=-1))  # (B, T, 2P)
        return BackboneOutput(last_hidden_state=states[-1], attention_mask=attention_mask,
                              hidden_states=tuple(states) if output_hidden_states else None)
