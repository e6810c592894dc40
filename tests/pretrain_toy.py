"""A tiny in-memory dataset that follows the PretrainingDataset contract (used by the trainer tests).

Each text repeats one token id with an occasional neighbour (a a a a+1 a ...), so a masked token is
predictable from the others and a model that learns shows a clearly falling loss in a few dozen steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class Special:
    pad: int = 0
    cls: int = 1
    sep: int = 2
    mask: int = 3
    bos: int = 1
    eos: int = 2
    unk: int = 4


class ToyPretrainingData(torch.utils.data.Dataset):
    FIRST = 5  # ids below are special

    def __init__(self, kind: str = "mlm", size: int = 64, max_seq_len: int = 16, vocab_size: int = 40,
                 seed: int = 0, split: str = "train") -> None:
        self.kind, self.size, self.max_seq_len, self.vocab_size = kind, size, max_seq_len, vocab_size
        self.seed = seed + (0 if split == "train" else 7919)
        self.special = Special()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def _run(self, gen: torch.Generator, length: int) -> list[int]:
        span = self.vocab_size - self.FIRST
        start = int(torch.randint(span, (1,), generator=gen))
        bumps = torch.rand(length, generator=gen) < 0.1
        return [self.FIRST + (start + int(b)) % span for b in bumps]

    def __getitem__(self, index: int) -> dict:
        text = torch.Generator().manual_seed(self.seed * 100_003 + index)  # fixed per example
        masking = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 100_003 + index)
        length = int(torch.randint(self.max_seq_len // 2, self.max_seq_len - 2, (1,), generator=text))
        sp = self.special
        if self.kind == "clm":
            ids = [sp.bos] + self._run(text, length)
            return {"input_ids": ids}
        pair_label = None
        if self.kind in ("mlm_nsp", "mlm_sop"):
            half = length // 2
            a = self._run(text, length)
            first, second = a[:half], a[half:]
            pair_label = index % 2
            if pair_label:
                first, second = (second, first) if self.kind == "mlm_sop" else (first, self._run(text, length - half))
            ids = [sp.cls] + first + [sp.sep] + second + [sp.sep]
            types = [0] * (len(first) + 2) + [1] * (len(second) + 1)
        else:
            ids = [sp.cls] + self._run(text, length) + [sp.sep]
            types = [0] * len(ids)
        labels = [IGNORE] * len(ids)
        inputs = list(ids)
        for pos in range(1, len(ids) - 1):
            if ids[pos] == sp.sep or float(torch.rand((), generator=masking)) >= 0.15:
                continue
            labels[pos] = ids[pos]
            roll = float(torch.rand((), generator=masking))
            if roll < 0.8:
                inputs[pos] = sp.mask
            elif roll < 0.9:
                inputs[pos] = int(torch.randint(self.FIRST, self.vocab_size, (1,), generator=masking))
        example = {"input_ids": inputs, "token_type_ids": types, "mlm_labels": labels}
        if pair_label is not None:
            example["nsp_labels" if self.kind == "mlm_nsp" else "sop_labels"] = pair_label
        return example

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)

        def pad(key: str, value: int) -> torch.Tensor:
            return torch.tensor([e[key] + [value] * (longest - len(e[key])) for e in examples])

        batch = {"input_ids": pad("input_ids", self.special.pad),
                 "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"]))
                                                 for e in examples])}
        if self.kind == "clm":
            batch["lm_labels"] = batch["input_ids"].masked_fill(batch["attention_mask"].eq(0), IGNORE)
            return batch
        batch["mlm_labels"] = pad("mlm_labels", IGNORE)
        if self.kind in ("mlm_nsp", "mlm_sop"):
            batch["token_type_ids"] = pad("token_type_ids", 0)
            key = "nsp_labels" if self.kind == "mlm_nsp" else "sop_labels"
            batch[key] = torch.tensor([e[key] for e in examples])
        return batch


def tiny_overrides(kind: str, run_dir: str, **extra: str) -> list[str]:
    """Dotted overrides for a CPU-second-sized run on ToyPretrainingData."""
    preset = {"clm": "gpt2-mini", "electra": "electra-small-discriminator", "span_corruption": "t5-mini"}.get(
        kind, "bert-tiny")
    items = {
        "run_dir": run_dir, "model.preset": preset, "objective.kind": kind, "objective.max_seq_len": "16",
        "model.overrides.hidden_size": "32", "model.overrides.num_heads": "2", "model.overrides.num_layers": "2",
        "model.overrides.intermediate_size": "64", "model.overrides.max_position_embeddings": "32",
        "optim.batch_size": "16", "optim.lr": "1e-2", "schedule.max_steps": "12", "schedule.warmup": "0.1",
        "system.log_every": "1", "system.progress_bar": "false", "eval.max_batches": "2",
        "eval.batch_size": "16", "system.threads": "1",
    }
    if kind == "bilm":  # ELMo's biLM (its own config: no heads or FFN, a character CNN and LSTM cells)
        for key in ("hidden_size", "num_heads", "intermediate_size"):
            del items[f"model.overrides.{key}"]
        items.update({"model.preset": "elmo-cpu", "model.overrides.filters": "[[1,8],[2,8],[3,16]]",
                      "model.overrides.lstm_dim": "32", "model.overrides.projection_dim": "16"})
    if kind == "plm":  # XLNet's permutation LM trains XLNet's own backbone
        items["model.preset"] = "xlnet-cpu"
    if kind == "translation":  # an encoder-decoder; one token-budget batch per example (max_tokens)
        items.update({"model.preset": "transformer-small", "model.overrides.num_decoder_layers": "1",
                      "objective.max_tokens": extra.get("objective.max_seq_len", items["objective.max_seq_len"])})
    if kind == "electra":
        items["model.overrides.embedding_size"] = "16"
        items["electra.generator_size"] = "0.5"
    items.update(extra)
    return [f"{k}={v}" for k, v in items.items()]
