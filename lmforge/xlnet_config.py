"""XLNet's configuration (Yang et al. 2019): its own config class, registered in `CONFIG_CLASSES` as
"xlnet", because its backbone (two-stream relative attention, segment recurrence) is not the shared
Transformer's.

Field names follow lmforge's `ModelConfig` where the meaning is the same (`hidden_size`, `num_layers`,
`dropout`, ...), so heads and fine-tuning read them unchanged; the XLNet-only fields are `mem_len` and
`clamp_len` (Transformer-XL, §2.4). Attributes generic code reads from a backbone config
(`causal`, `position_offset`, `type_vocab_size`, ...) are provided with their XLNet meaning.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(kw_only=True)
class XLNetConfig:
    """Everything needed to build an XLNet backbone; heads read the classifier fields."""

    family: str = "xlnet"

    # --- size (Yang et al. 2019 §3.1: XLNet-Large is BERT-Large's size) ---
    vocab_size: int = 32000
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12

    # --- Transformer-XL (§2.4) ---
    mem_len: int = 0  # > 0: cache this many content-stream states per layer for the next segment
    clamp_len: int = -1  # relative distances clamped to +-clamp_len; -1 = none (the released models)
    # longest input the fine-tuning and feature code feeds; relative positions themselves have no table
    max_position_embeddings: int = 512

    # --- regularisation and initialisation ---
    dropout: float = 0.1
    attention_dropout: float = 0.1  # the reference drops attention probabilities with `dropatt`
    classifier_dropout: float = 0.1  # HF summary_last_dropout
    initializer_range: float = 0.02

    # --- heads: XLNet classifies from the last token, <cls> (§3.1, the input layout A <sep> B <sep> <cls>) ---
    classifier_style: str = "last_mlp"
    classifier_activation: str = "tanh"
    multiple_choice_style: str | None = None
    tie_word_embeddings: bool = True

    pad_token_id: int | None = 5  # the released sentencepiece vocabulary's <pad>

    # what generic code reads from a backbone config, with XLNet's meaning
    causal = False
    position_offset = 0
    pooler = False
    scaled_residual_init = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}")
        if self.mem_len < 0:
            raise ValueError(f"mem_len must be >= 0 (0 = no memory), got {self.mem_len}")
        if self.family != "xlnet":
            raise ValueError(f"XLNetConfig.family must be 'xlnet', got {self.family!r}")

    @property
    def arch(self) -> str:
        return "xlnet"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embedding_size(self) -> int:
        return self.hidden_size

    @property
    def type_vocab_size(self) -> int:
        """Segments are relative (§2.5: same or different segment), so any number of segment ids works;
        non-zero tells the fine-tuning code that token_type_ids are read."""
        return 2

    @property
    def mlm_activation(self) -> str:
        return self.activation

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> XLNetConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown XLNetConfig fields: {unknown}")
        return cls(**data)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> XLNetConfig:
        if name not in XLNET_PRESETS:
            raise ValueError(f"unknown XLNet preset {name!r}; known: {', '.join(sorted(XLNET_PRESETS))}")
        return cls(**{**XLNET_PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> XLNetConfig:
        return dataclasses.replace(self, **changes)


XLNET_PRESETS: dict[str, dict[str, Any]] = {
    # Yang et al. 2019 §3.1 / the released xlnet_cased_L-12_H-768_A-12 and L-24_H-1024_A-16
    "xlnet-base-cased": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "xlnet-large-cased": dict(),
    # a size that pre-trains on two CPU cores
    "xlnet-cpu": dict(vocab_size=8000, hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024,
                      pad_token_id=0),
}
