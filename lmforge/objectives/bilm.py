"""ELMo's biLM objective (Peters et al. 2018 §3.1; bilm-tf `train_elmo.py`): token sequences cut from
the prepared stream as the causal LM cuts them (documents joined by the end-of-text token, which the
biLM reads as bilm-tf's </S>), each token also given as the character ids of its text; the `bilm`
head trains the forward and backward LMs with one shared softmax.

The character ids come from the tokenizer the data was prepared with (the copy beside the shards):
every id is decoded to its text once when the data opens (a (V, W) table), so a batch's characters
are one lookup per token. With a word-level tokenizer the units are words, as in the paper; with a
subword tokenizer they are its pieces. A word-encoder biLM (elmo-cpu-word) trains on the same batches
and ignores the characters, so the two encoders are compared on identical data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from lmforge.elmo_chars import tokenizer_char_table
from lmforge.objectives.base import ExampleRandom, pad_batch
from lmforge.objectives.clm import Blocks, CausalLM

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens


@dataclass(frozen=True, kw_only=True)
class BiLMSettings:
    max_characters_per_token: int = 50  # bilm-tf `max_characters_per_token`; must match the model's


@dataclass(frozen=True)
class BiLMLayout:
    blocks: Blocks
    chars: np.ndarray  # (V, W) int16 character ids of every token id

    def __len__(self) -> int:
        return len(self.blocks)


def corpus_char_table(corpus: Corpus, width: int) -> np.ndarray:
    """The (V, W) character table of the tokenizer `lmforge prepare` copied beside the corpus."""
    from lmforge.data.prepare import TOKENIZER_DIR
    from lmforge.tokenizers import has_tokenizer, load_tokenizer

    directory = corpus.dir / corpus.manifest.get("tokenizer", {}).get("dir", TOKENIZER_DIR)
    if not has_tokenizer(directory):
        raise FileNotFoundError(f"{directory}: objective bilm needs the tokenizer the data was prepared with "
                                "(to spell each token); re-run `lmforge prepare`")
    return tokenizer_char_table(load_tokenizer(directory), corpus.special, width, corpus.vocab_size)


@dataclass(frozen=True)
class BiLM(CausalLM):
    kind: ClassVar[str] = "bilm"
    Settings: ClassVar[type] = BiLMSettings
    heads: ClassVar[dict[str, dict[str, Any]]] = {"lm": {"kind": "bilm"}}
    settings: BiLMSettings = BiLMSettings()

    def check_model(self, model: Any) -> None:
        from lmforge.models.registry import BACKBONES

        backbone = BACKBONES.get(model.arch)
        if backbone is None or not getattr(backbone, "bidirectional_lm", False):
            raise ValueError(f"objective {self.kind} needs a biLM backbone (elmo-cpu, elmo-cpu-word, elmo-small, "
                             f"...), got arch {model.arch!r}")
        if model.reads_characters and model.max_characters_per_token != self.settings.max_characters_per_token:
            raise ValueError(f"objective.max_characters_per_token={self.settings.max_characters_per_token} "
                             f"but the model reads {model.max_characters_per_token}")

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> BiLMLayout:
        return BiLMLayout(super().layout(corpus, rng), corpus_char_table(corpus, self.settings.max_characters_per_token))

    def example(self, corpus: Corpus, layout: BiLMLayout, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        example = super().example(corpus, layout.blocks, index, rngs)
        example["char_ids"] = layout.chars[example["input_ids"]]  # (T, W)
        return example

    def collate(self, examples: list[dict[str, Any]], special: SpecialTokens) -> dict[str, torch.Tensor]:
        """Token ids and labels as the causal LM pads them; character ids (B, T, W) padded with 0."""
        batch = pad_batch([{k: v for k, v in ex.items() if k != "char_ids"} for ex in examples], special, self.fill)
        B, T = batch["input_ids"].shape
        chars = torch.zeros(B, T, examples[0]["char_ids"].shape[-1], dtype=torch.long)
        for i, ex in enumerate(examples):
            chars[i, : len(ex["char_ids"])] = torch.from_numpy(ex["char_ids"].astype(np.int64))
        batch["char_ids"] = chars
        return batch
