"""Tokenizers: train (WordPiece / byte-level BPE / Unigram), load (lmforge or HF dirs), export for HF."""

from lmforge.tokenizers.corpus import check_corpus_file, iter_lines
from lmforge.tokenizers.families import KINDS, TEMPLATES, FamilyTemplate, template
from lmforge.tokenizers.hf_files import load_tokenizer, write_hf_tokenizer_files
from lmforge.tokenizers.special import SpecialTokens, special_tokens
from lmforge.tokenizers.train import train_tokenizer

__all__ = [
    "KINDS",
    "TEMPLATES",
    "FamilyTemplate",
    "SpecialTokens",
    "check_corpus_file",
    "iter_lines",
    "load_tokenizer",
    "special_tokens",
    "template",
    "train_tokenizer",
    "write_hf_tokenizer_files",
]
