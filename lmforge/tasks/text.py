"""Tokenizer access for tasks: loading, padding id and the special-token layout of pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


def load_task_tokenizer(directory: str | Path) -> Tokenizer:
    """The model's tokenizer, without any truncation or padding baked into the file
    (HF tokenizer.json files often carry `truncation: 128`; tasks choose their own lengths)."""
    directory = Path(directory)
    try:
        from lmforge.tokenizers import load_tokenizer  # the project's loader, once it exists
    except ImportError:
        load_tokenizer = None
    if load_tokenizer is not None:
        tok = load_tokenizer(directory)
        tok = getattr(tok, "tokenizer", tok)  # a wrapper may hold the `tokenizers.Tokenizer`
    else:
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the model directory has no tokenizer.json")
        tok = Tokenizer.from_file(str(path))
    if not isinstance(tok, Tokenizer):
        raise TypeError(f"{directory}: expected a tokenizers.Tokenizer, got {type(tok).__name__}")
    tok.no_truncation()
    tok.no_padding()
    return tok


def unknown_id(tok: Tokenizer) -> int | None:
    """The id the tokenizer's model gives to text outside its vocabulary (None: it has none, e.g. byte BPE)."""
    name = getattr(tok.model, "unk_token", None)
    return tok.token_to_id(name) if name else None


def unknown_texts(encoding, sources: list[str], unk: int | None, by_word: bool = False) -> dict[int, str]:
    """{position: text} of the tokens encoded as the unknown id, so a backbone that reads characters
    (ELMo) spells the word itself, not the unknown token. `sources` are the encoded texts (indexed by
    sequence id) or, with `by_word`, the pre-tokenized words (offsets are then inside each word)."""
    if unk is None:
        return {}
    found = {}
    owners = encoding.word_ids if by_word else encoding.sequence_ids
    for position, (token, owner) in enumerate(zip(encoding.ids, owners)):
        if token == unk and owner is not None:
            start, end = encoding.offsets[position]
            found[position] = sources[owner][start:end]
    return found


def pad_id(tok: Tokenizer) -> int:
    for name in ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>"):
        token_id = tok.token_to_id(name)
        if token_id is not None:
            return token_id
    return 0


@dataclass(frozen=True)
class PairTemplate:
    """Where the post-processor puts special tokens around one or two texts.

    BERT: [CLS] A [SEP] B [SEP] with types 0..0 1..1; RoBERTa: <s> A </s></s> B </s>.
    Read off the post-processor itself so QA windows are built exactly as `encode(a, b)` would be.
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    type_a: int
    type_b: int
    prefix_types: tuple[int, ...]
    middle_types: tuple[int, ...]
    suffix_types: tuple[int, ...]

    @property
    def num_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, a: list[int], b: list[int]) -> tuple[list[int], list[int], int]:
        """(input_ids, token_type_ids, index of b's first token)."""
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        types = ([*self.prefix_types] + [self.type_a] * len(a) + [*self.middle_types]
                 + [self.type_b] * len(b) + [*self.suffix_types])
        return ids, types, len(self.prefix) + len(a) + len(self.middle)


def pair_template(tok: Tokenizer) -> PairTemplate:
    a = tok.encode("a", add_special_tokens=False)
    b = tok.encode("b", add_special_tokens=False)
    full = tok.post_process(a, b, add_special_tokens=True)
    ids, types = full.ids, full.type_ids
    plain = [i for i, special in enumerate(full.special_tokens_mask) if not special]
    if len(plain) != len(a.ids) + len(b.ids) or not a.ids or not b.ids:
        raise ValueError("the tokenizer's post-processor does not keep both texts of a pair")
    a_pos, b_pos = plain[: len(a.ids)], plain[len(a.ids):]
    a0, a1, b0, b1 = a_pos[0], a_pos[-1] + 1, b_pos[0], b_pos[-1] + 1
    return PairTemplate(
        prefix=tuple(ids[:a0]), middle=tuple(ids[a1:b0]), suffix=tuple(ids[b1:]),
        type_a=types[a0], type_b=types[b0],
        prefix_types=tuple(types[:a0]), middle_types=tuple(types[a1:b0]), suffix_types=tuple(types[b1:]),
    )


def summary_last(tok: Tokenizer) -> bool:
    """Whether the tokenizer puts its special tokens after the texts, the sequence-summary token last
    (XLNet §2.5: A <sep> B <sep> <cls>); such inputs are padded on the left (lmforge.tasks.base)."""
    try:
        template = pair_template(tok)
    except ValueError:  # a post-processor without pairs (GPT-2): nothing is added, nothing moves
        return False
    return not template.prefix and bool(template.suffix)


def encode_texts(tok: Tokenizer, first: list[str], second: list[str] | None, max_length: int) -> list:
    """Batch-encode single texts or pairs with the post-processor, truncating the longest text first
    (BERT's `_truncate_seq_pair`)."""
    tok.enable_truncation(max_length, strategy="longest_first")
    try:
        if second is None:
            return tok.encode_batch(first)
        return tok.encode_batch(list(zip(first, second)))
    finally:
        tok.no_truncation()
