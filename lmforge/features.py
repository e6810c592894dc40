"""Feature extraction: one vector per text (sentence embeddings) or one per text and layer.

Texts are sorted by token length and batched so padding stays minimal; the attention mask keeps
padding out of both attention and pooling, so a text's vector does not depend on its batch.
Per-layer features follow ELMo (Peters et al. 2018 §3.2): every layer's states are exposed and
the caller decides how to mix them; BERT §5.3 builds its feature-based NER on such layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer
from torch.nn import functional as F
from tqdm.auto import tqdm

from lmforge.nn.scalar_mix import ScalarMix

Pooling = Literal["mean", "cls", "last"]
POOLINGS: tuple[str, ...] = ("mean", "cls", "last")


def read_texts(path: str | Path) -> list[str]:
    """One text per line. Blank lines are an error: output row i must be input line i."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: input file not found")
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise ValueError(f"{path}: looks binary (NUL bytes), expected UTF-8 text with one text per line")
    texts = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8").lstrip("\ufeff") if number == 1 else line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: line {number}: not UTF-8 text ({err.reason})") from None
        if not text.strip():
            raise ValueError(
                f"{path}: line {number}: empty line (one text per line; output rows follow lines)"
            )
        texts.append(text)
    if not texts:
        raise ValueError(f"{path}: no texts (file is empty)")
    return texts


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "backbone", model)  # a TaskModel or a bare Backbone


def encode_texts(tokenizer: Tokenizer, texts: Sequence[str], max_length: int) -> list[Encoding]:
    """Encode without padding (batches pad themselves), truncated to `max_length` tokens."""
    tok = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's padding/truncation stay as they were
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)
    return tok.encode_batch(list(texts))


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) states and (B, T) 1/0 mask -> (B, H)."""
    if pooling == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (positions * mask.long()).argmax(dim=-1)  # the last real token under either padding, (B,)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")


def extra_inputs(backbone: torch.nn.Module, tokenizer: Tokenizer) -> Callable[..., dict[str, torch.Tensor]]:
    """Inputs a backbone reads besides the token ids (ELMo's characters), made from (ids, mask) by
    its `inputs_for_tokenizer` where it has one."""
    make = getattr(backbone, "inputs_for_tokenizer", None)
    return make(tokenizer) if make is not None else (lambda ids, mask: {})


def _check_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    count = num_layers + 1  # hidden_states = embeddings + one per layer
    bad = [i for i in layers if not -count <= i < count]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {count} hidden states "
                         f"(0 = embeddings .. {num_layers} = last layer, or -1 .. -{count})")
    return list(layers)


def embed_texts(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    pooling: Pooling = "mean",
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    max_length: int | None = None,
    normalize: bool = True,
    progress: bool = False,
    scalar_mix: ScalarMix | None = None,
) -> np.ndarray:
    """float32 (N, H), or (N, len(layers), H) with `layers`; rows in the order of `texts`.
    `scalar_mix` (ELMo §3.2) mixes the hidden states `layers` names (default: all) into one (N, H).
    `normalize` L2-normalises every vector (cosine similarity becomes a dot product)."""
    backbone = _backbone(model)
    config = backbone.config
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if pooling == "cls" and config.causal:
        raise ValueError("cls pooling needs a bidirectional encoder; a causal model's first token sees "
                         "only itself: use mean or last")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    positions = config.max_position_embeddings - config.position_offset
    max_length = min(max_length or positions, positions)
    if layers is not None:
        layers = _check_layers(layers, config.num_layers)
    if scalar_mix is not None and layers is None:
        layers = list(range(config.num_layers + 1))
    if scalar_mix is not None and scalar_mix.weights.numel() != len(layers):
        raise ValueError(f"scalar mix has {scalar_mix.weights.numel()} weights for {len(layers)} layers")
    # RoBERTa's position ids count non-pad tokens, so padding must use the model's own pad id
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    device = next(backbone.parameters()).device
    extra = extra_inputs(backbone, tokenizer)

    encodings = encode_texts(tokenizer, texts, max_length)
    empty = [i + 1 for i, enc in enumerate(encodings) if not enc.ids]
    if empty:
        raise ValueError(f"texts {empty[:10]} (1-based) encode to no tokens")
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids), reverse=True)
    out: np.ndarray | None = None

    was_training = backbone.training
    backbone.eval()
    try:
        with torch.inference_mode():
            starts = range(0, len(order), batch_size)
            for start in tqdm(starts, desc="embed", unit="batch", disable=not progress):
                index = order[start:start + batch_size]
                batch = [encodings[i] for i in index]
                width = max(len(e.ids) for e in batch)
                ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
                types = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, enc in enumerate(batch):
                    n = len(enc.ids)
                    ids[row, :n] = torch.tensor(enc.ids)
                    types[row, :n] = torch.tensor(enc.type_ids)
                    mask[row, :n] = 1
                ids, types, mask = ids.to(device), types.to(device), mask.to(device)
                result = backbone(ids, mask, types if config.type_vocab_size > 0 else None,
                                  output_hidden_states=layers is not None, **extra(ids, mask))
                if scalar_mix is not None:
                    mixed = scalar_mix.to(device)([result.hidden_states[layer] for layer in layers])  # (B, T, H)
                    vectors = pool(mixed, mask, pooling)
                elif layers is None:
                    vectors = pool(result.last_hidden_state, mask, pooling)  # (B, H)
                else:
                    vectors = torch.stack(
                        [pool(result.hidden_states[layer], mask, pooling) for layer in layers], dim=1
                    )  # (B, L, H)
                if normalize:
                    vectors = F.normalize(vectors.float(), p=2, dim=-1)
                vectors = vectors.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), *vectors.shape[1:]), dtype=np.float32)
                out[index] = vectors
    finally:
        backbone.train(was_training)
    assert out is not None
    return out
