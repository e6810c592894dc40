"""Token strings -> ELMo character ids, exactly as bilm-tf's `UnicodeCharsVocabulary` and `Batcher`
make them (AllenNLP's `ELMoCharacterMapper` is the same): [begin-of-word, UTF-8 bytes..., end-of-word,
padding...] over `max_characters_per_token` positions, bytes cut to leave room for the two markers;
the sentence markers <S> and </S> are [bow, bos/eos, eow, padding...]; every id + 1 so that 0 marks
a padding token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from lmforge.elmo_config import BOS_CHAR, BOW_CHAR, EOS_CHAR, EOW_CHAR, PAD_CHAR

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from lmforge.tokenizers import SpecialTokens

BOS_TOKEN, EOS_TOKEN = "<S>", "</S>"  # bilm-tf's sentence markers


def _marker(char: int, width: int) -> np.ndarray:
    code = np.full(width, PAD_CHAR, dtype=np.int16)
    code[:3] = (BOW_CHAR, char, EOW_CHAR)
    return code + 1


def token_char_ids(token: str, width: int = 50) -> np.ndarray:
    """(width,) int16 character ids of one token (bilm-tf `word_to_char_ids`, plus the batcher's +1)."""
    if width < 3:
        raise ValueError(f"max_characters_per_token must be at least 3 (two markers and a byte), got {width}")
    if token == BOS_TOKEN:
        return _marker(BOS_CHAR, width)
    if token == EOS_TOKEN:
        return _marker(EOS_CHAR, width)
    data = token.encode("utf-8", "ignore")[: width - 2]
    code = np.full(width, PAD_CHAR, dtype=np.int16)
    code[0] = BOW_CHAR
    code[1:len(data) + 1] = np.frombuffer(data, dtype=np.uint8)
    code[len(data) + 1] = EOW_CHAR
    return code + 1


def char_table(tokens: Sequence[str], width: int = 50) -> np.ndarray:
    """(V, width) int16: the character ids of every vocabulary entry, looked up per batch by token id."""
    return np.stack([token_char_ids(token, width) for token in tokens]) if tokens else np.zeros((0, width), np.int16)


def vocabulary_strings(tokenizer, special_ids: dict[int, str]) -> list[str]:
    """Each id's text as the tokenizer decodes it alone (WordPiece's ## and byte-level BPE's space
    markers removed by its decoder), with the ids in `special_ids` mapped to ELMo's markers (<S>, </S>)
    and other special tokens kept as their literal strings (the decoder would drop them)."""
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    decoded = tokenizer.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    strings = []
    for i, text in enumerate(decoded):
        if i in special_ids:
            strings.append(special_ids[i])
            continue
        text = text.strip()
        strings.append(text if text else (tokenizer.id_to_token(i) or ""))
    return strings


def sentence_markers(special: SpecialTokens) -> dict[int, str]:
    """Special ids read as bilm-tf's sentence markers: the start token (bos, else [CLS]) as <S>, the
    end token (eos, else [SEP]: the document end of the prepared stream) as </S>."""
    markers = {i: BOS_TOKEN for i in (special.cls, special.bos) if i is not None}
    end = special.eos if special.eos is not None else special.sep
    if end is not None:
        markers[end] = EOS_TOKEN
    return markers


def tokenizer_char_table(tokenizer: Tokenizer, special: SpecialTokens, width: int,
                         size: int | None = None) -> np.ndarray:
    """(V, width) character ids of a tokenizer's ids, the first `size` of them (default: all); the same
    table for pre-training (lmforge.objectives.bilm) and features, so a token is spelt the same in both."""
    strings = vocabulary_strings(tokenizer, sentence_markers(special))
    if size is not None and len(strings) < size:
        raise ValueError(f"the tokenizer has {len(strings)} ids, fewer than the {size} the model or data uses")
    return char_table(strings[:size] if size is not None else strings, width)
