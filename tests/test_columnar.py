"""Parquet/Arrow input (the `datasets` extra): `prepare`, `tokenizer train` and generic task data read
them as they read the same text in .txt/JSONL; missing columns and a missing pyarrow are one line."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import data_path

from lmforge.cli import main as cli_main
from lmforge.data import columnar
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.shards import open_split
from lmforge.tasks import TaskOptions, get_task
from lmforge.tokenizers import iter_lines, train_tokenizer, write_hf_tokenizer_files

pa = pytest.importorskip("pyarrow", reason="Parquet/Arrow input needs pyarrow (pip install 'lmforge[datasets]')")
pq = pytest.importorskip("pyarrow.parquet")

WORDS = "the cat dog sat on mat ran fast slow big small red blue house tree car road river sky sun".split()


def documents(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + " ." for _ in range(n)]


def write_parquet(path: Path, columns: dict[str, list], row_group_size: int = 4) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def write_arrow(path: Path, columns: dict[str, list], stream: bool = False) -> Path:
    """Arrow IPC: the file format, or the stream format HF `datasets` keeps its cache in; several batches."""
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=5):
                writer.write_batch(batch)
    return path


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(documents(200)) + "\n")
    return write_hf_tokenizer_files(train_tokenizer("wordpiece", [corpus], 80, family="bert", min_frequency=1),
                                    folder / "tok", "bert")


def cli(argv: list, capsys) -> tuple[int, str, str]:
    code = cli_main.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tokens(out: Path, manifest: dict, split: str) -> list[np.ndarray]:
    shards = open_split(out / split, np.dtype(manifest["dtype"]), manifest["splits"][split]["shards"])
    return [np.asarray(shard.tokens) for shard in shards]


def test_prepare_reads_parquet_and_arrow_like_the_same_text(tok_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(columnar, "BATCH_ROWS", 3)  # rows reach Python in several slices of each batch
    docs = documents(40, seed=1)
    docs[7] = " ".join(documents(1200, seed=2))  # longer than one tokenizer piece: cut as in text files
    text = tmp_path / "docs.txt"
    text.write_text("\n".join(docs) + "\n")
    with_gaps = {"id": list(range(len(docs) + 2)), "text": docs[:5] + [None] + docs[5:9] + ["  "] + docs[9:]}
    inputs = {"parquet": write_parquet(tmp_path / "docs.parquet", with_gaps),
              "arrow": write_arrow(tmp_path / "docs.arrow", with_gaps),
              "arrow stream": write_arrow(tmp_path / "cache.arrow", with_gaps, stream=True)}

    def run(path: Path, name: str, fmt: str) -> tuple[dict, Path]:
        out = tmp_path / name
        return prepare(PrepareConfig(tokenizer=str(tok_dir), inputs=[str(path)], out=str(out), format=fmt,
                                     valid_fraction=0.25, progress=False)), out

    want, want_out = run(text, "txt", "lines")  # a document a line, as a table has a document a row
    assert want["splits"]["valid"]["documents"] > 0
    for name, path in inputs.items():
        got, out = run(path, name.replace(" ", "_"), "auto")
        assert got["splits"] == want["splits"], name
        for split in ("train", "valid"):
            assert all(np.array_equal(a, b) for a, b in zip(tokens(out, got, split), tokens(want_out, want, split)))
        read = got["read"]
        assert read["documents"] == len(docs) and read["lines"] == len(docs) + 2, name
        assert read["empty_documents"] == 2 and read["long_lines_chunked"] == 0
        assert f"{path}:6: null 'text'; skipped" in read["examples"] and f"{path}:11: empty 'text'; skipped" in read[
            "examples"]


def test_prepare_cli_takes_text_column_and_mixes_text_and_tables(tok_dir, tmp_path, capsys):
    docs = documents(12, seed=3)
    table = write_parquet(tmp_path / "part.parquet", {"body": docs[6:]})
    text = tmp_path / "part.jsonl"
    text.write_text("".join(json.dumps({"body": d}) + "\n" for d in docs[:6]))
    code, out, err = cli(["prepare", "--tokenizer", tok_dir, "--input", text, table, "--out", tmp_path / "out",
                          "--text-column", "body", "--quiet"], capsys)
    assert code == 0, err
    assert "read 2 files" in out and "12 documents" in out


@pytest.mark.parametrize("kind", ["parquet", "arrow"])
def test_missing_or_non_text_column_is_one_line_naming_file_and_columns(tok_dir, tmp_path, capsys, kind):
    write = write_parquet if kind == "parquet" else write_arrow
    path = write(tmp_path / f"docs.{kind}", {"id": [1, 2], "content": ["a b", "c d"]})
    for argv in (["prepare", "--tokenizer", tok_dir, "--input", path, "--out", tmp_path / "out", "--quiet"],
                 ["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "60", "--corpus", path,
                  "--out", tmp_path / "tok"]):
        code, _, err = cli(argv, capsys)
        assert code == 2
        assert err.strip().splitlines() == [
            f"lmforge {argv[0]}: error: {path}: no column(s) ['text']; it has ['id', 'content']"]
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", path, "--out", tmp_path / "out",
                        "--text-column", "id", "--quiet"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{path}: column 'id' holds int64, not text" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "tok").exists()


def test_corrupt_table_and_missing_pyarrow_are_one_line(tok_dir, tmp_path, capsys, monkeypatch):
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet at all\n" * 20)
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", fake, "--out", tmp_path / "out"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{fake}: cannot read as Parquet (" in err
    stream = write_arrow(tmp_path / "cut.arrow", {"text": documents(40)}, stream=True)
    stream.write_bytes(stream.read_bytes()[: stream.stat().st_size * 2 // 3])  # a cache file cut short
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", stream, "--out", tmp_path / "out", "--quiet"],
                       capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{stream}: cannot read past row " in err and not (tmp_path / "out").exists()
    good = write_parquet(tmp_path / "good.parquet", {"text": documents(3)})
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.ipc"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it fails
    code, _, err = cli(["prepare", "--tokenizer", tok_dir, "--input", good, "--out", tmp_path / "out"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [f"lmforge prepare: error: {good}: reading Parquet/Arrow files needs "
                                        f"pyarrow: pip install 'lmforge[datasets]'"]


def test_tokenizer_train_reads_a_table_like_the_same_lines(tmp_path, capsys):
    docs = documents(150, seed=4)
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(docs) + "\n")
    table = write_parquet(tmp_path / "corpus.parquet", {"text": docs[:50] + [None, ""] + docs[50:]}, 32)
    vocab = {}
    for path in (text, table):
        code, _, err = cli(["tokenizer", "train", "--kind", "wordpiece", "--vocab-size", "70", "--corpus", path,
                            "--out", tmp_path / path.suffix[1:]], capsys)
        assert code == 0, err
        vocab[path.suffix] = json.loads((tmp_path / path.suffix[1:] / "tokenizer.json").read_text())["model"]["vocab"]
    assert "read 152 lines" in err and "skipped 2 null or blank Parquet/Arrow rows" in err
    assert list(iter_lines([table])) == list(iter_lines([text])) == docs  # the trainer sees the same texts
    # (the trainer breaks ties between equally frequent pieces differently from run to run)
    assert len(vocab[".parquet"]) == len(vocab[".txt"]) == 70


ROWS = [("a fine film .", "yes it is", 1), ("dull and long", "no", 0), ("", "empty text is text", 1),
        ("great \"quoted\" fun", "sure", 0)]


def classification_files(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    columns = {"review": [r[0] for r in ROWS], "reply": [r[1] for r in ROWS], "stars": [r[2] for r in ROWS]}
    jsonl = folder / "train.jsonl"
    jsonl.write_text("".join(json.dumps(dict(zip(columns, r))) + "\n" for r in ROWS))
    return {"jsonl": jsonl, "parquet": write_parquet(folder / "train.parquet", columns, 2),
            "arrow": write_arrow(folder / "train.arrow", columns)}


def test_generic_classification_reads_parquet_and_arrow_like_jsonl(tmp_path):
    files = classification_files(tmp_path / "data")
    options = dict(text_column="review", text_pair_column="reply", label_column="stars")
    want = get_task("classification", TaskOptions(**options)).read(files["jsonl"], "train")
    assert [(e.text_a, e.text_b, e.label, e.line) for e in want] == [(a, b, str(c), i + 1)
                                                                       for i, (a, b, c) in enumerate(ROWS)]
    for kind in ("parquet", "arrow"):
        got = get_task("classification", TaskOptions(**options)).read(files[kind], "train")
        assert [(e.text_a, e.text_b, e.label, e.line) for e in got] == [(e.text_a, e.text_b, e.label, e.line)
                                                                        for e in want]
        assert {e.source for e in got} == {str(files[kind])}
    # --format names the format of a file whatever its suffix; a folder's train.parquet is found by name
    renamed = files["parquet"].rename(tmp_path / "data.bin")
    got = get_task("classification", TaskOptions(**options, format="parquet")).read(renamed, "train")
    assert [e.label for e in got] == [e.label for e in want]
    files["jsonl"].unlink()
    (tmp_path / "data" / "train.arrow").rename(tmp_path / "data" / "valid.arrow")
    task = get_task("classification", TaskOptions(**options))
    with pytest.raises(FileNotFoundError, match=r"train\.parquet"):
        task.read(tmp_path / "data", "train")
    assert [e.text_a for e in task.read(tmp_path / "data", "dev")] == [r[0] for r in ROWS]


def test_generic_table_without_labels_for_predict_and_bad_rows_name_the_row(tmp_path):
    path = write_parquet(tmp_path / "inputs.parquet", {"sentence": ["one", "two"]})
    task = get_task("classification", TaskOptions())
    assert [(e.text_a, e.label) for e in task.read(path, "predict")] == [("one", None), ("two", None)]
    with pytest.raises(ValueError, match=rf"^{path}: no column\(s\) \['label'\]; it has \['sentence'\]$"):
        task.read(path, "train")
    nulls = write_parquet(tmp_path / "nulls.parquet", {"sentence": ["one", None], "label": ["a", "b"]})
    with pytest.raises(ValueError, match=rf"^{nulls}:2: column 'sentence' is not text: None$"):
        task.read(nulls, "train")
    no_label = write_parquet(tmp_path / "nolabel.parquet", {"sentence": ["one", "two"], "label": ["a", None]})
    with pytest.raises(ValueError, match=rf"^{no_label}:2: empty label in column 'label'$"):
        task.read(no_label, "train")


@pytest.mark.parametrize("name,folder", [("mrpc", "MRPC"), ("qnli", "QNLI"), ("stsb", "STS-B")])
def test_glue_reads_its_hf_datasets_export_like_the_tsv(tmp_path, name, folder):
    """The shipped dev TSV, written as HF `datasets` exports GLUE (its column names, integer classes),
    reads as the same examples; the export's unlabelled test rows (label -1) read as unlabelled."""
    from lmforge.tasks.classification import HF_GLUE

    tsv = data_path("glue", folder, "dev.tsv")
    want = get_task(name).read(tsv.parent, "dev")
    text_a, text_b, classes = HF_GLUE[name]
    labels = [e.label if classes is None else classes.index(e.label) for e in want]
    export = {text_a: [e.text_a for e in want], text_b: [e.text_b for e in want], "label": labels,
              "idx": list(range(len(want)))}
    for kind, path in (("parquet", write_parquet(tmp_path / "validation.parquet", export, 100)),
                       ("arrow", write_arrow(tmp_path / "validation.arrow", export, stream=True))):
        task = get_task(name, TaskOptions(dev_file=str(path)))
        got = task.read(tsv.parent, "dev")
        assert [(e.text_a, e.text_b, e.label) for e in got] == [(e.text_a, e.text_b, e.label) for e in want], kind
        assert got[-1].line == len(want) and got[-1].source == str(path)
    unlabelled = write_parquet(tmp_path / "test.parquet", export | {"label": [-1] * len(want)})
    assert all(e.label is None for e in get_task(name).read(unlabelled, "test"))
    with pytest.raises(ValueError, match=r"no label \(this split needs labels\)"):
        get_task(name).read(unlabelled, "train")


def test_glue_table_maps_the_export_classes_and_names_bad_rows(tmp_path):
    rows = {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 1, 2]}
    got = get_task("mnli").read(write_parquet(tmp_path / "mnli.parquet", rows), "train")
    assert [e.label for e in got] == ["entailment", "neutral", "contradiction"]  # the export's ClassLabel order
    # the TSV's column names and label strings work as well
    same = {"sentence1": rows["premise"], "sentence2": rows["hypothesis"],
            "gold_label": ["entailment", "neutral", "contradiction"]}
    assert get_task("mnli").read(write_parquet(tmp_path / "tsv_names.parquet", same), "train") == [
        type(e)(e.text_a, e.text_b, e.label, e.line, str(tmp_path / "tsv_names.parquet")) for e in got]
    bad = write_parquet(tmp_path / "bad.parquet", rows | {"label": [0, 3, 1]})
    with pytest.raises(ValueError, match=rf"^{bad}:2: label 3 is not a class of mnli \(0..2\)$"):
        get_task("mnli").read(bad, "train")
    other = write_parquet(tmp_path / "other.parquet", {"text": ["a"], "label": [0]})
    with pytest.raises(ValueError, match=rf"^{other}: no column 'premise' \(or 'sentence1'\); it has \['text', 'label'\]$"):
        get_task("mnli").read(other, "train")


def test_every_glue_task_has_its_export_layout():
    from lmforge.tasks import GLUE
    from lmforge.tasks.classification import HF_GLUE

    assert set(HF_GLUE) == set(GLUE)
    for name, (_, text_b, classes) in HF_GLUE.items():
        assert (text_b is None) == (GLUE[name].text_b is None)
        assert classes is None and GLUE[name].labels is None or set(classes) == set(GLUE[name].labels)
