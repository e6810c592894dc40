"""Causal LM (GPT-1 §3.1, GPT-2 §2): documents joined with the end-of-text token after each one
(doc0 <eos> doc1 <eos> ...) and cut into max_seq_len blocks (the WebText/OpenAI recipe); every
position predicts the next token."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lmforge.config import ModelConfig
from lmforge.objectives.base import BaseObjective, ExampleRandom, document_end, require_positions
from lmforge.objectives.packing import clm_block_count

if TYPE_CHECKING:
    from lmforge.data.pretraining import Corpus
    from lmforge.tokenizers import SpecialTokens


@dataclass(frozen=True)
class Blocks:
    """The virtual stream doc0 <eos> doc1 <eos> ... in `count` blocks of max_seq_len tokens."""

    doc_lo: np.ndarray  # (D,) global token span of each document
    doc_hi: np.ndarray
    doc_vend: np.ndarray  # (D,) end of each document in the stream, after its <eos>
    count: int

    def __len__(self) -> int:
        return self.count


@dataclass(frozen=True)
class CausalLM(BaseObjective):
    kind: ClassVar[str] = "clm"
    heads: ClassVar[dict[str, dict[str, Any]]] = {"lm": {"kind": "clm"}}

    def check_data(self, special: SpecialTokens) -> None:
        if document_end(special) is None:
            raise ValueError(f"objective {self.kind!r} needs special tokens ['eos (or sep)'] that the tokenizer lacks")

    def check_model(self, model: ModelConfig) -> None:
        if not model.causal:
            raise ValueError(f"objective {self.kind} needs a causal model (a GPT preset such as gpt2-mini), got an encoder")
        require_positions(model, self.max_seq_len)

    def layout(self, corpus: Corpus, rng: np.random.Generator) -> Blocks:
        lo, hi = corpus.document_spans()
        lengths = hi - lo
        return Blocks(lo, hi, np.cumsum(lengths + 1), clm_block_count(lengths, self.max_seq_len))

    def example(self, corpus: Corpus, layout: Blocks, index: int, rngs: ExampleRandom) -> dict[str, Any]:
        L, eos = self.max_seq_len, corpus.document_end
        lo, hi = index * L, (index + 1) * L  # span of the virtual stream
        d = int(np.searchsorted(layout.doc_vend, lo, side="right"))
        parts = []
        while lo < hi and d < len(layout.doc_vend):
            start = layout.doc_vend[d] - (layout.doc_hi[d] - layout.doc_lo[d]) - 1  # in the stream
            a, b = lo - start, min(hi, layout.doc_vend[d] - 1) - start  # offsets inside the document
            if b > a:
                parts.append(corpus.read(int(layout.doc_lo[d] + a), int(layout.doc_lo[d] + b), bits=False)[0])
            if hi >= layout.doc_vend[d]:  # the block includes this document's end-of-text token
                parts.append(np.asarray([eos], np.int64))
            lo = layout.doc_vend[d]
            d += 1
        ids = np.concatenate(parts).astype(np.int64)
        return {"input_ids": ids, "lm_labels": ids.copy()}
