"""Normalizers, pre-tokenizers and decoders for each tokenizer kind.

Accent stripping is the subtle part. Stripping accents means NFD-decomposing and dropping combining
marks (Unicode category Mn). NFD also splits every Hangul syllable into its jamo, and BERT's
normalizer never recomposes them, so google-research/bert's uncased models see Korean as jamo
(its multilingual README warns about exactly this). Here lower-casing never implies accent
stripping, and when stripping is asked for, an NFC pass afterwards recomposes Hangul: jamo are
not combining marks, so they survive StripAccents and NFC puts the syllables back together.
"""

from __future__ import annotations

from tokenizers import decoders, normalizers, pre_tokenizers
from tokenizers.normalizers import Normalizer


def _strip_accents_keep_hangul() -> list[Normalizer]:
    return [normalizers.NFD(), normalizers.StripAccents(), normalizers.NFC()]


def wordpiece_normalizer(lowercase: bool, strip_accents: bool) -> Normalizer:
    """BERT's cleaning (control chars, CJK spacing) and optional lower-casing, accents kept unless asked."""
    bert = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    if not strip_accents:
        return bert
    return normalizers.Sequence([bert, *_strip_accents_keep_hangul()])


def legacy_bert_normalizer(lowercase: bool, strip_accents: bool | None, chinese_chars: bool) -> Normalizer:
    """Exactly what an existing HF BERT `vocab.txt` was trained with (strip_accents=None follows
    lowercase, the original behaviour): a released vocab must be read the way it was built."""
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=chinese_chars, strip_accents=strip_accents, lowercase=lowercase
    )


def bpe_normalizer(lowercase: bool, strip_accents: bool) -> Normalizer | None:
    """GPT-2 applies no normalisation (its byte-level BPE represents any string, §2.2); nor does bilm-tf
    to the words of its vocabulary (the word kind)."""
    steps: list[Normalizer] = []
    if strip_accents:
        steps += _strip_accents_keep_hangul()
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps) if steps else None


def unigram_normalizer(lowercase: bool, strip_accents: bool) -> Normalizer:
    """SentencePiece's default rule is NFKC (Kudo & Richardson 2018 §3.3); ALBERT's tokenizer also maps
    LaTeX-style quotes `` and '' to a plain double quote before it."""
    steps: list[Normalizer] = [
        normalizers.Replace("``", '"'),
        normalizers.Replace("''", '"'),
        normalizers.NFKC(),
    ]
    if strip_accents:
        steps += _strip_accents_keep_hangul()
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def pre_tokenizer(kind: str, add_prefix_space: bool = False) -> pre_tokenizers.PreTokenizer:
    if kind == "wordpiece":
        return pre_tokenizers.BertPreTokenizer()
    if kind == "bpe":
        return pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=True)
    if kind == "unigram":
        # SentencePiece marks word starts with U+2581 and treats the text as one stream (§2)
        return pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
        ])
    if kind == "word":
        # bilm-tf splits each line of its (already tokenised) corpus on whitespace, nothing more: a word
        # of WikiText or CoNLL ("U.S.", "@-@") stays one token, as the NER tags and the biLM expect
        return pre_tokenizers.WhitespaceSplit()
    raise ValueError(f"unknown tokenizer kind {kind!r}")


def decoder(kind: str) -> decoders.Decoder | None:
    """None for words: the library's default decoding joins the tokens with spaces, which is the text."""
    if kind == "word":
        return None
    if kind == "wordpiece":
        return decoders.WordPiece(prefix="##")
    if kind == "bpe":
        return decoders.ByteLevel()
    if kind == "unigram":
        return decoders.Metaspace(replacement="▁", prepend_scheme="always")
    raise ValueError(f"unknown tokenizer kind {kind!r}")
