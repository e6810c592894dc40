"""Tokenizers: train (WordPiece / byte-level BPE / Unigram / words), load (lmforge or HF dirs), export for HF."""

from lmforge.tokenizers.corpus import check_corpus_file, iter_lines
from lmforge.tokenizers.families import KINDS, TEMPLATES, FamilyTemplate, template
from lmforge.tokenizers.hf_files import (
    TOKENIZER_FILES,
    check_vocab_fits,
    copy_tokenizer_files,
    has_tokenizer,
    load_tokenizer,
    require_model_tokenizer,
    vocab_fingerprint,
    write_hf_tokenizer_files,
)
from lmforge.tokenizers.special import SpecialTokens, special_tokens
from lmforge.tokenizers.train import train_tokenizer

__all__ = [
    "KINDS",
    "TEMPLATES",
    "TOKENIZER_FILES",
    "FamilyTemplate",
    "SpecialTokens",
    "check_corpus_file",
    "check_vocab_fits",
    "copy_tokenizer_files",
    "has_tokenizer",
    "iter_lines",
    "load_tokenizer",
    "require_model_tokenizer",
    "special_tokens",
    "template",
    "train_tokenizer",
    "vocab_fingerprint",
    "write_hf_tokenizer_files",
]
