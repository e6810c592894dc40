"""ELMo's configuration (Peters et al. 2018 §3.3-3.4; bilm-tf `options.json`): a character CNN token
encoder and a biLSTM with projections, its own config class (registered in `CONFIG_CLASSES` as "elmo").
`token_encoder="word_embedding"` swaps the character CNN for a word embedding table, bilm-tf's word-input
biLM (its options without `char_cnn`): the baseline ELMo's character inputs are measured against.

Field names follow bilm-tf's options where they exist (`filters`, `n_highway`, `cell_clip`, ...), so
an exported `options.json` is a renaming, not a translation. The attributes generic code reads from a
backbone config (`hidden_size`, `num_layers`, `causal`, `max_position_embeddings`, ...) are provided
with their ELMo meaning: `hidden_size` is a layer's width, forward and backward states concatenated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# bilm-tf `UnicodeCharsVocabulary` / AllenNLP `ELMoCharacterMapper`: 256 byte values, then the
# sentence and word markers and the in-word padding; the batcher adds 1 to every id so that 0 can
# mask whole padding tokens (hence 262 rows in the character table).
BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260
NUM_CHARACTERS = 262

# how a token becomes the biLSTM's input: its characters through a CNN (§3.4), or a row of a word table
TOKEN_ENCODERS = ("char_cnn", "word_embedding")

# Peters et al. 2018 §3.4 / bilm-tf options of the released model: 2048 character n-gram filters
PAPER_FILTERS: tuple[tuple[int, int], ...] = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512), (7, 1024))


@dataclass(kw_only=True)
class ElmoConfig:
    """Everything needed to build an ELMo biLM backbone; the softmax lives in the `bilm` head."""

    vocab_size: int = 793471  # the softmax size (1B Word Benchmark vocabulary in the paper)
    pad_token_id: int | None = 0

    token_encoder: str = "char_cnn"  # or "word_embedding": (vocab_size, projection_dim), no characters read

    # --- character CNN (§3.4; bilm-tf `char_cnn`) ---
    max_characters_per_token: int = 50
    n_characters: int = NUM_CHARACTERS
    char_embedding_dim: int = 16
    filters: tuple[tuple[int, int], ...] = PAPER_FILTERS  # (width, count)
    n_highway: int = 2
    cnn_activation: str = "relu"  # bilm-tf options of the released models

    # --- biLSTM (§3.4; bilm-tf `lstm`) ---
    lstm_dim: int = 4096  # cells
    projection_dim: int = 512
    num_layers: int = 2
    cell_clip: float = 3.0
    proj_clip: float = 3.0
    use_skip_connections: bool = True  # residual connection from the first to the second layer
    dropout: float = 0.1

    # --- what generic code reads from a backbone config ---
    max_position_embeddings: int = 512  # longest sequence embed/finetune batch (an LSTM has no limit)
    initializer_range: float = 0.02  # heads on top of ELMo are initialised like lmforge's other heads
    classifier_dropout: float = 0.1
    scaled_residual_init: bool = False

    causal = False
    position_offset = 0
    type_vocab_size = 0
    # --- what task heads and `lmforge finetune` read (Peters et al. 2018 §3.3) ---
    task_layer_mix = True  # task heads read gamma * sum_j s_j h_j over all layers (§3.2 eq. 1)
    task_layer_standardize = True  # each layer standardized per dimension first (lmforge.nn.scalar_mix: why)
    freeze_for_tasks = True  # "we freeze the weights of the biLM" (§3.3); finetune --update-backbone trains it
    classifier_style = "mean"  # a biLM has no sentence token (lmforge.heads.tasks.SequenceClassificationHead)
    task_rnn_layers = 1  # the task's biLSTM over the mix (§3.3, lmforge.nn.task_rnn); finetune --task-rnn N

    def __post_init__(self) -> None:
        if self.token_encoder not in TOKEN_ENCODERS:
            raise ValueError(f"token_encoder must be one of {', '.join(TOKEN_ENCODERS)}, got {self.token_encoder!r}")
        self.filters = tuple((int(w), int(n)) for w, n in self.filters)
        if not self.filters:
            raise ValueError("ElmoConfig.filters is empty: the character CNN needs at least one (width, count)")
        too_wide = [w for w, _ in self.filters if w > self.max_characters_per_token]
        if too_wide:
            raise ValueError(f"filter widths {too_wide} exceed max_characters_per_token={self.max_characters_per_token}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}")
        if self.cnn_activation not in ("relu", "tanh"):
            raise ValueError(f"cnn_activation must be relu or tanh (bilm-tf), got {self.cnn_activation!r}")

    @property
    def arch(self) -> str:
        return "elmo"

    @property
    def reads_characters(self) -> bool:
        """Whether tokens reach the model as characters (char_ids) or as word ids only."""
        return self.token_encoder == "char_cnn"

    @property
    def n_filters(self) -> int:
        return sum(n for _, n in self.filters)

    @property
    def hidden_size(self) -> int:
        """Width of every hidden state: forward and backward projections concatenated (§3.2)."""
        return 2 * self.projection_dim

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["filters"] = [list(f) for f in self.filters]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElmoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ElmoConfig fields: {unknown}")
        return cls(**data)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ElmoConfig:
        if name not in ELMO_PRESETS:
            raise ValueError(f"unknown ELMo preset {name!r}; known: {', '.join(sorted(ELMO_PRESETS))}")
        return cls(**{**ELMO_PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> ElmoConfig:
        return dataclasses.replace(self, **changes)


ELMO_PRESETS: dict[str, dict[str, Any]] = {
    # Peters et al. 2018 §3.4 / AllenNLP elmo_2x4096_512_2048cnn_2xhighway options.json
    "elmo-original": dict(),
    # AllenNLP elmo_2x1024_128_2048cnn_1xhighway options.json ("small")
    "elmo-small": dict(n_highway=1, lstm_dim=1024, projection_dim=128),
    # a size that trains on two CPU cores: a quarter of the filters, 512 cells, 128 projections
    "elmo-cpu": dict(filters=((1, 32), (2, 32), (3, 64), (4, 128)), n_highway=2, lstm_dim=512,
                     projection_dim=128),
    # elmo-cpu's biLSTM and softmax over a word embedding table instead of characters: the word-level LSTM
    # LM of the same size (Peters et al. 2018 §3 and Jozefowicz et al. 2016 §3 compare the two encoders)
    "elmo-cpu-word": dict(token_encoder="word_embedding", lstm_dim=512, projection_dim=128),
}
