"""The task model's own recurrent layer over frozen features (Peters et al. 2018 §3.3).

ELMo is not a model a task reads with one linear layer: §3.3 adds the ELMo vector to "the task RNN",
a supervised biLSTM that contextualises it for the task (the paper's NER model is a biLSTM-CRF, its
SST-5 model the biattentive classification network, both with biLSTM encoders). A head given
`task_rnn=L` runs L bidirectional LSTM layers over its representation, each direction hidden/2 wide so
the head's output layer keeps its width. Sequences are packed by their real lengths, so neither
direction reads padding (the backward direction of a padded batch would otherwise start on it).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lmforge.nn.dropout import Dropout


class TaskRNN(nn.Module):
    def __init__(self, width: int, num_layers: int, dropout: float = 0.0) -> None:
        super().__init__()
        if width % 2:
            raise ValueError(f"task RNN: the width {width} must be even (half of it per direction)")
        if num_layers < 1:
            raise ValueError(f"task RNN: num_layers must be >= 1, got {num_layers}")
        self.drop = Dropout(dropout)  # on its input, as the head's own dropout is on the output layer's
        self.lstm = nn.LSTM(width, width // 2, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, H) states, (B, T) mask with the real tokens first -> (B, T, H), zeros at padding."""
        batch, length, _ = states.shape
        lengths = (attention_mask.sum(1) if attention_mask is not None
                   else torch.full((batch,), length, device=states.device))
        if attention_mask is not None:
            right_padded = torch.arange(length, device=states.device)[None, :] < lengths[:, None]  # (B, T)
            if not torch.equal(right_padded, attention_mask.bool()):
                raise ValueError("task RNN: padding must come after the real tokens (the mask is not right-padded)")
        x = self.drop(states).float()  # the LSTM runs in fp32 (CPU autocast has no half-precision LSTM)
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)  # (B, T, H)
        return out.to(states.dtype)
