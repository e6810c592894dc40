"""Translating a file with an encoder-decoder, and scoring it with sacreBLEU.

Decoding follows Vaswani et al. §6.1: beam search with 4 beams and length penalty alpha = 0.6, at most
source length + 50 output tokens (lmforge.generate; one limit per batch, from its longest source, so
sentences are batched by length). Sources are encoded as in training (lmforge.objectives.translation):
the tokenizer's ids without its template, then the end-of-sentence token; a source longer than the
encoder's positions is truncated (its EOS kept) and counted, never refused, so every line of a test set
gets a translation.

Scores are sacreBLEU's corpus BLEU and chrF on detokenized, cased text (the hypotheses are the
tokenizer's decoded output, the references the raw lines), reported with their signatures so a number
can be compared with another paper's only when the signatures match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmforge.generate import GenerationConfig, generate, lm_head


@dataclass(kw_only=True)
class TranslateConfig:
    strategy: str = "beam"  # or "greedy"
    num_beams: int = 4  # §6.1
    length_penalty: float = 0.6  # §6.1: alpha
    extra_tokens: int = 50  # §6.1: maximum output length = input length + 50
    batch_size: int = 64  # sentences per batch
    progress: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in ("beam", "greedy"):
            raise ValueError(f"strategy must be beam or greedy, not {self.strategy!r}")
        if self.batch_size < 1 or self.num_beams < 1 or self.extra_tokens < 1:
            raise ValueError("batch_size, num_beams and extra_tokens must be >= 1")


@dataclass
class Translations:
    texts: list[str]
    truncated: int  # sources cut to the encoder's positions


def special_ids(tokenizer: Any, model: torch.nn.Module) -> tuple[int, int, int]:
    """(end of sentence, padding, decoder start) as training used them (objectives.translation)."""
    from lmforge.objectives.base import document_end, pad_id
    from lmforge.tokenizers import special_tokens

    special = special_tokens(tokenizer)
    eos = document_end(special)
    if eos is None:
        raise ValueError("the model's tokenizer has no end-of-sentence token (</s> or [SEP])")
    start = model.config.decoder_start_id
    return eos, pad_id(special), pad_id(special) if start is None else start


def check_translator(model: torch.nn.Module, where: str) -> None:
    """A translation model is an encoder-decoder with a sequence-to-sequence LM head."""
    if not hasattr(model.backbone, "encode"):
        raise ValueError(f"{where}: the model has no decoder (an encoder or decoder-only model); translation "
                         "needs an encoder-decoder such as one trained with objective.kind=translation")
    lm_head(model)


@torch.no_grad()
def translate(model: torch.nn.Module, tokenizer: Any, sentences: list[str], config: TranslateConfig,
              device: torch.device | str = "cpu") -> Translations:
    """One translation per sentence, in order."""
    eos, pad, start = special_ids(tokenizer, model)
    limit = model.backbone.encoder.max_length()
    encoded, truncated = [], 0
    for ids in (e.ids for e in tokenizer.encode_batch(sentences, add_special_tokens=False)):
        if len(ids) + 1 > limit:
            ids, truncated = ids[: limit - 1], truncated + 1
        encoded.append([*ids, eos])
    gen = GenerationConfig(strategy=config.strategy, num_beams=config.num_beams,
                           length_penalty=config.length_penalty, eos_token_id=eos, pad_token_id=pad,
                           decoder_start_token_id=start)
    most = model.backbone.max_length() - 1  # the decoder's positions, after the start token
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    texts: list[str] = [""] * len(encoded)
    model.to(device).eval()
    batches = range(0, len(order), config.batch_size)
    for lo in tqdm(batches, desc="translate", disable=not config.progress):
        chunk = order[lo:lo + config.batch_size]
        width = max(len(encoded[i]) for i in chunk)
        # right-padded: encoder positions count from the first token whatever the padding
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        gen.max_new_tokens = min(width + config.extra_tokens, most)
        out = generate(model, ids.to(device), mask.to(device), gen)
        for i, tokens in zip(chunk, out.tokens):
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return Translations(texts, truncated)


def score(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """sacreBLEU corpus BLEU and chrF (defaults: 13a tokenization, cased), with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "bleu_detail": str(b)}


def write_lines(path: str | Path, lines: list[str]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")
