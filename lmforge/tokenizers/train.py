"""Train a tokenizer from raw text files with the HuggingFace `tokenizers` library.

kind picks the algorithm: WordPiece (BERT, Devlin et al. 2019 §3 / Wu et al. 2016), byte-level BPE
(GPT-2, Radford et al. 2019 §2.2; RoBERTa, Liu et al. 2019 §4.4), Unigram LM (Kudo 2018, used by
ALBERT through SentencePiece) or whole words (ELMo, Peters et al. 2018 §3: the most frequent
whitespace-separated tokens of an already tokenised corpus, the rest unknown, as bilm-tf's vocabulary
files are). family picks the special tokens and how segments are wrapped.
The result is ready to use: decoder, post-processor, padding and truncation are all set.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

from lmforge.data.reader import ReadStats
from lmforge.tokenizers import pipeline
from lmforge.tokenizers.corpus import batched_lines, check_corpus_file
from lmforge.tokenizers.families import KINDS, FamilyTemplate, default_family, template


def _added(tmpl: FamilyTemplate) -> list[AddedToken]:
    return [
        AddedToken(tok, special=True, normalized=False, lstrip=tmpl.mask_lstrip and tok == tmpl.mask)
        for tok in tmpl.specials
    ]


def _model_and_trainer(kind: str, tmpl: FamilyTemplate, vocab_size: int, min_frequency: int,
                       limit_alphabet: int | None, show_progress: bool):
    specials = _added(tmpl)
    # None keeps every character: a 1000-character cap would turn rare Hangul syllables into [UNK]
    alphabet = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    if kind in ("wordpiece", "unigram", "word") and tmpl.unk is None:
        raise ValueError(f"{kind} needs an unknown token, but family {tmpl.name!r} has none; use kind 'bpe'")
    if kind == "wordpiece":
        model = models.WordPiece(unk_token=tmpl.unk, continuing_subword_prefix="##",
                                 max_input_chars_per_word=100)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
            continuing_subword_prefix="##", show_progress=show_progress, **alphabet,
        )
    elif kind == "bpe":
        model = models.BPE(unk_token=None)  # byte-level: every string is representable, no unknowns
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress, **alphabet,
        )
    elif kind == "unigram":
        model = models.Unigram()
        # max_piece_length 16 and two EM sub-iterations are SentencePiece's defaults (Kudo 2018 §3.2)
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token=tmpl.unk, max_piece_length=16,
            n_sub_iterations=2, shrinking_factor=0.75, show_progress=show_progress,
        )
    elif kind == "word":
        # the vocab_size - specials most frequent words (WordLevelTrainer counts the specials in the size)
        model = models.WordLevel(unk_token=tmpl.unk)
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=specials, show_progress=show_progress)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
    return model, trainer


def finish_tokenizer(tokenizer: Tokenizer, tmpl: FamilyTemplate, max_length: int | None) -> Tokenizer:
    """Post-processing, padding and truncation, so encode/encode_batch give model-ready ids."""
    tokenizer.post_processor = tmpl.post_processor(tokenizer.token_to_id)
    pad = tmpl.pad or tmpl.eos  # GPT-2 has no pad token; pad with <|endoftext|>, masked out anyway
    if pad is not None:
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    if max_length:
        tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def train_tokenizer(
    kind: str,
    files: Iterable[str | Path],
    vocab_size: int,
    *,
    lowercase: bool | None = None,
    strip_accents: bool = False,
    family: str | None = None,
    min_frequency: int = 2,
    limit_alphabet: int | None = None,
    model_max_length: int | None = None,
    show_progress: bool = False,
    stats: ReadStats | None = None,
    text_column: str = "text",
) -> Tokenizer:
    """Train on the lines of `files` (plain or .gz; streamed). `lowercase=None` takes the family's
    default (uncased BERT/ALBERT, cased GPT-2/RoBERTa); accents are kept unless `strip_accents`.
    `stats` receives what the reader repaired (invalid UTF-8 lines, replaced and counted).
    Parquet/Arrow files contribute the texts of `text_column`, a row at a time."""
    if kind not in KINDS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {KINDS}")
    tmpl = template(family or default_family(kind))
    files = [check_corpus_file(f, text_column) for f in files]
    if not files:
        raise ValueError("no corpus files given")
    if vocab_size <= len(tmpl.specials) + tmpl.sentinels:
        raise ValueError(
            f"vocab_size {vocab_size} leaves no room beyond the {len(tmpl.specials) + tmpl.sentinels} special tokens"
        )
    if lowercase is None:
        lowercase = tmpl.default_lowercase

    model, trainer = _model_and_trainer(kind, tmpl, vocab_size - tmpl.sentinels, min_frequency, limit_alphabet,
                                        show_progress)
    tokenizer = Tokenizer(model)
    if kind == "wordpiece":
        tokenizer.normalizer = pipeline.wordpiece_normalizer(lowercase, strip_accents)
    elif kind in ("bpe", "word"):
        tokenizer.normalizer = pipeline.bpe_normalizer(lowercase, strip_accents)
    else:
        tokenizer.normalizer = pipeline.unigram_normalizer(lowercase, strip_accents)
    tokenizer.pre_tokenizer = pipeline.pre_tokenizer(kind)
    decoder = pipeline.decoder(kind)
    if decoder is not None:
        tokenizer.decoder = decoder

    tokenizer.train_from_iterator(batched_lines(files, stats=stats, text_column=text_column), trainer=trainer)

    for expected, tok in enumerate(tmpl.specials):  # the model config's pad/cls ids rely on this order
        if tokenizer.token_to_id(tok) != expected:
            got = tokenizer.token_to_id(tok)
            raise RuntimeError(f"special token {tok} got id {got}, expected {expected}")
    if tokenizer.get_vocab_size() <= len(tmpl.specials):
        raise ValueError(f"corpus {', '.join(map(str, files))} produced no vocabulary (too little text?)")
    if tmpl.sentinels:
        tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in tmpl.sentinel_tokens()])
    return finish_tokenizer(tokenizer, tmpl, model_max_length or tmpl.model_max_length)
