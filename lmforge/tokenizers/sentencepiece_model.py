"""A SentencePiece Unigram model file (`spiece.model`, as released T5 checkpoints ship it) as a `tokenizers`
Tokenizer with T5's template: the same pieces and scores, SentencePiece's normalisation (its precompiled
NFKC character map, runs of spaces collapsed, a space prepended), `</s>` appended, and T5's sentinels
`<extra_id_0..N-1>` after the pieces, <extra_id_0> last. The file is a protobuf message: parsing it runs no
code from the file. Needs the `sentencepiece` package (`pip install lmforge[t5]`).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from lmforge.tokenizers.families import TEMPLATES, FamilyTemplate
from lmforge.tokenizers.train import finish_tokenizer

UNIGRAM = 1  # TrainerSpec.model_type
CONTROL, USER_DEFINED = 3, 4  # ModelProto.SentencePiece.type


def read_spiece(path: Path, sentinels: int, max_length: int | None) -> Tokenizer:
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ValueError(f"{path}: reading a SentencePiece model needs the sentencepiece package "
                         "(pip install 'lmforge[t5]')") from None
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as err:  # protobuf's DecodeError
        raise ValueError(f"{path}: not a SentencePiece model ({err})") from None
    if proto.trainer_spec.model_type != UNIGRAM or not proto.pieces:
        raise ValueError(f"{path}: only SentencePiece Unigram models are supported (T5's kind)")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=proto.trainer_spec.unk_id,
                                         byte_fallback=proto.trainer_spec.byte_fallback))
    spec = proto.normalizer_spec
    steps = [normalizers.Precompiled(spec.precompiled_charsmap)] if spec.precompiled_charsmap else []
    if spec.remove_extra_whitespaces:
        steps += [normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    tokenizer.normalizer = normalizers.Sequence(steps)
    prepend = "always" if spec.add_dummy_prefix else "never"
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)
    tokenizer.add_special_tokens([AddedToken(p.piece, special=True, normalized=False)
                                  for p in proto.pieces if p.type in (CONTROL, USER_DEFINED)])
    names = {role: proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None for role, i in
             (("pad", proto.trainer_spec.pad_id), ("unk", proto.trainer_spec.unk_id), ("eos", proto.trainer_spec.eos_id))}
    if names["eos"] is None:
        raise ValueError(f"{path}: the model has no end-of-sequence piece (eos_id), which T5 appends to every text")
    tmpl = FamilyTemplate(**{**TEMPLATES["t5"].__dict__, **names, "sentinels": sentinels})
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tmpl.sentinel_tokens()])
    return finish_tokenizer(tokenizer, tmpl, max_length)
