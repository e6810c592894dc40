"""Special-token templates of each model family: which tokens exist, in which id order, and how
one or two segments are wrapped. The tokenizer algorithm (WordPiece, BPE, Unigram, words) is chosen
separately, so a template only fixes what the model code and the HF checkpoint expect.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import processors

from lmforge.choices import TOKENIZER_KINDS


@dataclass(frozen=True)
class FamilyTemplate:
    """The special tokens of one family. `specials` is in id order: a trained vocab starts with them."""

    name: str
    specials: tuple[str, ...]
    pad: str | None
    unk: str | None
    cls: str | None = None
    sep: str | None = None
    mask: str | None = None
    bos: str | None = None
    eos: str | None = None
    default_kind: str = "wordpiece"
    default_lowercase: bool = False
    model_max_length: int = 512
    mask_lstrip: bool = False  # RoBERTa/ALBERT: the mask token absorbs the space before it (their HF files)
    model_input_names: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask")
    padding_side: str = "right"  # XLNet pads on the left: its <cls> is the last token
    # T5 (Raffel et al. §3.1.4): sentinels <extra_id_0..N-1> appended after training, <extra_id_0> the last
    # id of the vocabulary and the others counting down from it (span corruption's noise-span markers)
    sentinels: int = 0

    def sentinel_tokens(self) -> list[str]:
        """In the order they are added: <extra_id_{N-1}> first, so <extra_id_0> gets the last id."""
        return [f"<extra_id_{i}>" for i in reversed(range(self.sentinels))]

    def post_processor(self, token_to_id) -> processors.PostProcessor | None:
        """Segment wrapping. BERT §3 / ALBERT: [CLS] A [SEP] B [SEP] with segment ids 0/1.
        RoBERTa (Liu et al. 2019 §4.2 drops NSP and segments): <s> A </s></s> B </s>, all type 0.
        GPT-2 adds nothing; callers append <|endoftext|> between documents themselves.
        Marian (HF MarianTokenizer): A </s>, a pair A B </s>, no segment ids."""
        if self.name in ("bert", "albert", "electra", "distilbert"):
            cls, sep = self.cls, self.sep
            return processors.TemplateProcessing(
                single=f"{cls}:0 $A:0 {sep}:0",
                pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
                special_tokens=[(cls, token_to_id(cls)), (sep, token_to_id(sep))],
            )
        if self.name == "roberta":
            return processors.RobertaProcessing(
                (self.sep, token_to_id(self.sep)), (self.cls, token_to_id(self.cls)),
                trim_offsets=True, add_prefix_space=False,
            )
        if self.name == "gpt2":
            return processors.ByteLevel(trim_offsets=False)
        if self.name == "t5":  # T5: every text ends with </s>, no start token, no segment ids
            eos = self.eos
            return processors.TemplateProcessing(single=f"$A:0 {eos}:0", pair=f"$A:0 {eos}:0 $B:0 {eos}:0",
                                                 special_tokens=[(eos, token_to_id(eos))])
        if self.name == "xlnet":  # Yang et al. 2019 §2.5: A <sep> B <sep> <cls>, <cls> in segment 2
            cls, sep = self.cls, self.sep
            return processors.TemplateProcessing(
                single=f"$A:0 {sep}:0 {cls}:2", pair=f"$A:0 {sep}:0 $B:1 {sep}:1 {cls}:2",
                special_tokens=[(cls, token_to_id(cls)), (sep, token_to_id(sep))],
            )
        if self.name == "marian":
            eos = self.eos
            return processors.TemplateProcessing(single=f"$A:0 {eos}:0", pair=f"$A:0 $B:0 {eos}:0",
                                                 special_tokens=[(eos, token_to_id(eos))])
        raise ValueError(f"no post-processing defined for family {self.name!r}")


_BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _bert_like(name: str) -> FamilyTemplate:
    return FamilyTemplate(
        name=name, specials=_BERT_SPECIALS, pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]",
        mask="[MASK]", default_kind="wordpiece", default_lowercase=True,
    )


TEMPLATES: dict[str, FamilyTemplate] = {
    "bert": _bert_like("bert"),
    "electra": _bert_like("electra"),
    "distilbert": _bert_like("distilbert"),
    "roberta": FamilyTemplate(
        name="roberta", specials=("<s>", "<pad>", "</s>", "<unk>", "<mask>"), pad="<pad>", unk="<unk>",
        cls="<s>", sep="</s>", mask="<mask>", bos="<s>", eos="</s>", default_kind="bpe",
        mask_lstrip=True, model_input_names=("input_ids", "attention_mask"),
    ),
    "gpt2": FamilyTemplate(
        name="gpt2", specials=("<|endoftext|>",), pad=None, unk=None, bos="<|endoftext|>",
        eos="<|endoftext|>", default_kind="bpe", model_max_length=1024,
        model_input_names=("input_ids", "attention_mask"),
    ),
    # the original Transformer as HF's MarianMTModel reads it: a shared (joint) subword vocabulary for
    # both languages (Vaswani et al. §5.1), every sequence ends with </s>, padding doubles as the decoder
    # start token, and there are no segments (input_ids + attention_mask only)
    "marian": FamilyTemplate(
        name="marian", specials=("<pad>", "</s>", "<unk>"), pad="<pad>", unk="<unk>", eos="</s>",
        default_kind="bpe", model_input_names=("input_ids", "attention_mask"),
    ),
    # ALBERT (Lan et al. 2020) keeps BERT's [CLS]/[SEP]/[MASK] but SentencePiece's <pad>/<unk> at 0/1
    "albert": FamilyTemplate(
        name="albert", specials=("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"), pad="<pad>", unk="<unk>",
        cls="[CLS]", sep="[SEP]", mask="[MASK]", default_kind="unigram", default_lowercase=True,
        mask_lstrip=True,
    ),
    # T5 (Raffel et al. §2.2): a SentencePiece (Unigram) vocabulary with <pad> 0, </s> 1, <unk> 2, cased,
    # and 100 sentinels at the end
    "t5": FamilyTemplate(
        name="t5", specials=("<pad>", "</s>", "<unk>"), pad="<pad>", unk="<unk>", eos="</s>",
        default_kind="unigram", model_input_names=("input_ids", "attention_mask"), sentinels=100,
    ),
    # XLNet (Yang et al. 2019): the released SentencePiece vocabulary's specials in its id order
    "xlnet": FamilyTemplate(
        name="xlnet", specials=("<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>", "<eod>", "<eop>"),
        pad="<pad>", unk="<unk>", cls="<cls>", sep="<sep>", mask="<mask>", bos="<s>", eos="</s>",
        default_kind="unigram", mask_lstrip=True, padding_side="left",
    ),
}

KINDS = TOKENIZER_KINDS


def template(family: str) -> FamilyTemplate:
    if family not in TEMPLATES:
        raise ValueError(f"unknown tokenizer family {family!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[family]


def default_family(kind: str) -> str:
    """Word vocabularies take BERT's specials: ELMo reads [CLS]/[SEP] as its <S>/</S> (lmforge.elmo_chars)."""
    return {"wordpiece": "bert", "bpe": "gpt2", "unigram": "albert", "word": "bert"}[kind]
