"""Pre-training examples built on the fly from the memory-mapped output of `lmforge prepare`.

The example layout (packing, sentence pairs) is fixed when the dataset is opened, so __len__ is
constant; __getitem__ is a pure function of (seed, epoch, index): every random choice uses a
generator seeded from those numbers, so any worker, rank or resumed run sees the same example.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lmforge.data.prepare import MANIFEST
from lmforge.data.shards import Shard, open_split
from lmforge.objectives.masking import IGNORE, MaskingSpec, mask_tokens
from lmforge.objectives.packing import clm_block_count, full_sentence_units, pack_full_sentences
from lmforge.objectives.segments import build_pairs, truncate_pair
from lmforge.tokenizers import SpecialTokens

Kind = Literal["mlm", "mlm_nsp", "mlm_sop", "electra", "clm"]
KINDS = ("mlm", "mlm_nsp", "mlm_sop", "electra", "clm")

_STATIC, _DYNAMIC, _LAYOUT, _TRUNCATE = 1, 2, 3, 4  # independent random streams


@dataclass(kw_only=True)
class ObjectiveConfig:
    kind: Kind = "mlm"
    max_seq_len: int = 128
    mlm_probability: float = 0.15  # BERT §3.1; cramming/MosaicBERT use 0.25-0.3
    mask_token_prob: float = 0.8  # of the selected: [MASK]
    random_token_prob: float = 0.1  # of the selected: random token (rest unchanged)
    whole_word_masking: bool = False
    dynamic_masking: bool = True  # RoBERTa §4.1: re-drawn each epoch; False = static (fixed per example)
    short_seq_prob: float = 0.1  # BERT create_pretraining_data: sometimes shorter targets
    next_sentence_prob: float = 0.5  # NSP: actual next 50% / random 50%

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective kind must be one of {KINDS}, not {self.kind!r}")
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len must be at least 8, got {self.max_seq_len}")
        if not 0.0 <= self.short_seq_prob <= 1.0 or not 0.0 <= self.next_sentence_prob <= 1.0:
            raise ValueError("short_seq_prob and next_sentence_prob must be probabilities")
        self.masking()  # validates the masking rates

    def masking(self) -> MaskingSpec:
        return MaskingSpec(
            rate=self.mlm_probability,
            mask_token_prob=self.mask_token_prob,
            random_token_prob=self.random_token_prob,
            whole_word=self.whole_word_masking,
        )


def read_manifest(prepared_dir: str | Path) -> dict:
    path = Path(prepared_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run `lmforge prepare --out {prepared_dir}` first")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


class PretrainingDataset(torch.utils.data.Dataset):
    """Examples for one objective over one split of a prepared corpus."""

    def __init__(self, prepared_dir, objective: ObjectiveConfig, seed: int = 0, split: str = "train") -> None:
        self.dir = Path(prepared_dir)
        self.objective = objective
        self.seed = seed
        self.split = split
        self.epoch = 0
        manifest = read_manifest(self.dir)
        if split not in manifest["splits"]:
            raise FileNotFoundError(
                f"{self.dir}: has no {split!r} split (has {sorted(manifest['splits'])}); "
                "use --valid-fraction or --valid with `lmforge prepare`"
            )
        self.manifest = manifest
        self.vocab_size: int = manifest["vocab_size"]
        self.special = SpecialTokens.from_dict(manifest["special_tokens"])
        self._dtype = np.dtype(manifest["dtype"])
        self._shard_info = manifest["splits"][split]["shards"]
        self._shards: list[Shard] | None = None
        # CLM separates documents with end-of-text (GPT-2); a BERT-style tokenizer has [SEP] instead
        self.document_end = self.special.eos if self.special.eos is not None else self.special.sep
        self._check_special()
        self._index()
        self._spec = objective.masking()
        self._random_pool = np.setdiff1d(np.arange(self.vocab_size), np.asarray(sorted(self.special.ids()), dtype=np.int64))

    # ------------------------------------------------------------------ opening
    def _check_special(self) -> None:
        s, kind = self.special, self.objective.kind
        if kind == "clm":
            missing = [] if self.document_end is not None else ["eos (or sep)"]
        else:
            missing = [name for name in ("cls", "sep", "mask") if getattr(s, name) is None]
        if missing:
            raise ValueError(
                f"{self.dir / MANIFEST}: objective {kind!r} needs special tokens {missing} that the tokenizer lacks"
            )

    @property
    def shards(self) -> list[Shard]:
        if self._shards is None:  # opened lazily: cheap to pickle into DataLoader workers
            self._shards = open_split(self.dir / self.split, self._dtype, self._shard_info)
        return self._shards

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = None
        return state

    def _index(self) -> None:
        """Global token offsets of every sentence and document, then the objective's layout."""
        bases = np.cumsum([0] + [info["tokens"] for info in self._shard_info])
        self._bases = bases
        sent_lo, sent_hi, sent_doc, doc_first = [], [], [], []
        n_docs = 0
        for k, shard in enumerate(self.shards):
            offs = np.asarray(shard.sentences) + bases[k]
            sent_lo.append(offs[:-1])
            sent_hi.append(offs[1:])
            docs = np.asarray(shard.documents)
            per_doc = np.diff(docs)
            sent_doc.append(np.repeat(np.arange(n_docs, n_docs + len(per_doc)), per_doc))
            doc_first.append(docs[:-1] + sum(len(x) for x in sent_lo[:-1]))
            n_docs += len(per_doc)
        self._sent_lo = np.concatenate(sent_lo) if sent_lo else np.zeros(0, np.int64)
        self._sent_hi = np.concatenate(sent_hi) if sent_hi else np.zeros(0, np.int64)
        self._sent_doc = np.concatenate(sent_doc) if sent_doc else np.zeros(0, np.int64)
        doc_first = np.concatenate(doc_first + [np.asarray([len(self._sent_lo)])]).astype(np.int64)
        kind, L = self.objective.kind, self.objective.max_seq_len
        if kind in ("mlm", "electra"):
            units = full_sentence_units(np.stack([self._sent_lo, self._sent_hi], 1), self._sent_doc, L - 2)
            self._unit_lo, self._unit_hi, self._unit_doc = units
            self._examples = pack_full_sentences(self._unit_hi - self._unit_lo, self._unit_doc, L - 2)
            self._len = len(self._examples) - 1
        elif kind in ("mlm_nsp", "mlm_sop"):
            doc_sentences = [
                np.append(self._sent_lo[a:b], self._sent_hi[b - 1]) for a, b in zip(doc_first[:-1], doc_first[1:])
            ]
            rng = np.random.default_rng([self.seed, _LAYOUT])
            self.pairs = build_pairs(
                doc_sentences,
                L,
                rng,
                kind="nsp" if kind == "mlm_nsp" else "sop",
                short_seq_prob=self.objective.short_seq_prob,
                next_sentence_prob=self.objective.next_sentence_prob,
            )
            self._len = len(self.pairs)
        else:  # clm: doc0 <eos> doc1 <eos> ... cut into L-token blocks
            self._doc_lo = self._sent_lo[doc_first[:-1]]
            self._doc_hi = self._sent_hi[doc_first[1:] - 1]
            lengths = self._doc_hi - self._doc_lo
            self._doc_vend = np.cumsum(lengths + 1)  # virtual end (after the eos) of each document
            self._len = clm_block_count(lengths, L)

    # ------------------------------------------------------------------ reading
    def _read(self, lo: int, hi: int, bits: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Tokens (and word-start bits) of global span [lo, hi), which may cross shards."""
        k = int(np.searchsorted(self._bases, lo, side="right")) - 1
        ids, ws = [], []
        while lo < hi:
            shard = self.shards[k]
            a, b = lo - self._bases[k], min(hi, self._bases[k + 1]) - self._bases[k]
            ids.append(np.asarray(shard.tokens[a:b], dtype=np.int64))
            if bits:
                ws.append(shard.word_start(int(a), int(b)))
            lo = self._bases[k] + b
            k += 1
        if not ids:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        return np.concatenate(ids), (np.concatenate(ws) if bits else None)

    # ------------------------------------------------------------------ examples
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._len

    def _mask_rng(self, index: int) -> np.random.Generator:
        if self.objective.dynamic_masking:  # RoBERTa §4.1: a new mask every time the example is seen
            return np.random.default_rng([self.seed, _DYNAMIC, self.epoch, index])
        return np.random.default_rng([self.seed, _STATIC, index])  # BERT: one mask per example

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} examples")
        kind = self.objective.kind
        if kind == "clm":
            return self._clm(index)
        if kind in ("mlm", "electra"):
            ids, ws, special = self._full_sentences(index)
            types = None
            out = {}
        else:
            ids, ws, special, types = self._pair(index)
            out = {"nsp_labels" if kind == "mlm_nsp" else "sop_labels": int(self.pairs.label[index])}
        inputs, labels = mask_tokens(
            ids, ws, special, self._mask_rng(index), self._spec, self.special.mask, self._random_pool
        )
        out.update(input_ids=inputs, mlm_labels=labels)
        if types is not None:
            out["token_type_ids"] = types
        return out

    def _full_sentences(self, index: int):
        """[CLS] s1 s2 ... [SEP], an extra [SEP] where a document ends (RoBERTa §4.2 FULL-SENTENCES)."""
        u0, u1 = self._examples[index], self._examples[index + 1]
        cls, sep = self.special.cls, self.special.sep
        ids, ws, special = [np.asarray([cls])], [np.ones(1, bool)], [np.ones(1, bool)]
        for u in range(u0, u1):
            if u > u0 and self._unit_doc[u] != self._unit_doc[u - 1]:
                ids.append(np.asarray([sep])), ws.append(np.ones(1, bool)), special.append(np.ones(1, bool))
            t, w = self._read(int(self._unit_lo[u]), int(self._unit_hi[u]))
            ids.append(t), ws.append(w), special.append(np.zeros(len(t), bool))
        ids.append(np.asarray([sep])), ws.append(np.ones(1, bool)), special.append(np.ones(1, bool))
        return np.concatenate(ids).astype(np.int64), np.concatenate(ws), np.concatenate(special)

    def _pair(self, index: int):
        """[CLS] A [SEP] B [SEP] with token types 0 for [CLS] A [SEP], 1 for B [SEP] (BERT §3)."""
        p = self.pairs
        a, wa = self._read(int(p.a_start[index]), int(p.a_end[index]))
        b, wb = self._read(int(p.b_start[index]), int(p.b_end[index]))
        rng = np.random.default_rng([self.seed, _TRUNCATE, index])
        n = self.objective.max_seq_len - 3
        a_idx, b_idx = truncate_pair(np.arange(len(a)), np.arange(len(b)), n, rng)
        a, wa, b, wb = a[a_idx], wa[a_idx], b[b_idx], wb[b_idx]
        cls, sep = self.special.cls, self.special.sep
        ids = np.concatenate([[cls], a, [sep], b, [sep]]).astype(np.int64)
        ws = np.concatenate([[True], wa, [True], wb, [True]])
        special = np.zeros(len(ids), bool)
        special[[0, len(a) + 1, len(ids) - 1]] = True
        types = np.zeros(len(ids), np.int64)
        types[len(a) + 2 :] = 1
        return ids, ws, special, types

    def _clm(self, index: int) -> dict:
        L, eos = self.objective.max_seq_len, self.document_end
        lo, hi = index * L, (index + 1) * L  # span of the virtual stream doc0 <eos> doc1 <eos> ...
        d = int(np.searchsorted(self._doc_vend, lo, side="right"))
        parts = []
        while lo < hi and d < len(self._doc_vend):
            vstart = self._doc_vend[d] - (self._doc_hi[d] - self._doc_lo[d]) - 1
            a, b = lo - vstart, min(hi, self._doc_vend[d] - 1) - vstart  # offsets inside the document
            if b > a:
                parts.append(self._read(int(self._doc_lo[d] + a), int(self._doc_lo[d] + b), bits=False)[0])
            if hi >= self._doc_vend[d]:  # the block includes this document's end-of-text token
                parts.append(np.asarray([eos], np.int64))
            lo = self._doc_vend[d]
            d += 1
        ids = np.concatenate(parts).astype(np.int64)
        return {"input_ids": ids, "lm_labels": ids.copy()}

    # ------------------------------------------------------------------ batching
    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Pad to the longest example; -100 labels and attention 0 at padding."""
        pad = self.special.pad if self.special.pad is not None else (self.document_end or 0)
        T = max(len(ex["input_ids"]) for ex in examples)
        B = len(examples)
        batch = {"input_ids": torch.full((B, T), pad, dtype=torch.long), "attention_mask": torch.zeros(B, T, dtype=torch.long)}
        for key in ("token_type_ids", "mlm_labels", "lm_labels"):
            if key in examples[0]:
                batch[key] = torch.full((B, T), 0 if key == "token_type_ids" else IGNORE, dtype=torch.long)
        for i, ex in enumerate(examples):
            n = len(ex["input_ids"])
            batch["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
            batch["attention_mask"][i, :n] = 1
            for key in ("token_type_ids", "mlm_labels", "lm_labels"):
                if key in ex:
                    batch[key][i, :n] = torch.from_numpy(ex[key])
        for key in ("nsp_labels", "sop_labels"):
            if key in examples[0]:
                batch[key] = torch.tensor([ex[key] for ex in examples], dtype=torch.long)
        return batch
