"""Ids of the special tokens, looked up once so the data pipeline never hard-codes them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tokenizers import Tokenizer

# role -> names the supported families use for it, most specific first
_NAMES: dict[str, tuple[str, ...]] = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>"),
    "cls": ("[CLS]", "<cls>", "<s>"),  # XLNet has both <cls> and <s>
    "sep": ("[SEP]", "<sep>", "</s>"),
    "mask": ("[MASK]", "<mask>"),
    "bos": ("<s>", "<|endoftext|>"),
    "eos": ("</s>", "<|endoftext|>"),
}


@dataclass(frozen=True)
class SpecialTokens:
    """None where the family has no such token (BERT has no bos/eos; GPT-2 has no pad, unk, cls,
    sep or mask: its tokenizer pads with <|endoftext|> and only the attention mask marks padding)."""

    pad: int | None = None
    unk: int | None = None
    cls: int | None = None
    sep: int | None = None
    mask: int | None = None
    bos: int | None = None
    eos: int | None = None
    all_ids: tuple[int, ...] = ()  # every special added token, named roles or not

    def ids(self) -> set[int]:
        """Every special id, e.g. to keep them out of MLM masking and random replacement."""
        values = (self.pad, self.unk, self.cls, self.sep, self.mask, self.bos, self.eos)
        return {v for v in values if v is not None} | set(self.all_ids)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpecialTokens:
        return cls(**{**data, "all_ids": tuple(data.get("all_ids", ()))})


def special_tokens(tokenizer: Tokenizer) -> SpecialTokens:
    """Look the roles up among the tokenizer's special added tokens (a byte-level BPE may well have
    learnt "<s>" as ordinary text); a tokenizer without any falls back to its vocabulary."""
    specials = {tok.content: idx for idx, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
    lookup = specials.get if specials else tokenizer.token_to_id
    found: dict[str, int | None] = {}
    for role, names in _NAMES.items():
        found[role] = next((i for i in map(lookup, names) if i is not None), None)
    named = {v for v in found.values() if v is not None}
    return SpecialTokens(**found, all_ids=tuple(sorted(named | set(specials.values()))))
