"""Every task end to end through the CLI on slices of the real data, with tiny models; the metrics
`evaluate` prints are recomputed from `predict`'s output with the reference libraries."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
from _finetune_helpers import tiny_model_dir
from conftest import data_path
from scipy.stats import pearsonr
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import accuracy_score, f1_score

from lmforge.cli import main as cli
from lmforge.finetune import HEAD
from lmforge.models import load_model
from lmforge.tasks.metrics import squad_scores

COMMON = ["--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-progress"]


def head_lines(path: Path, n: int, skip: int = 0) -> list[str]:
    with open(path, encoding="utf-8-sig") as handle:
        lines = list(islice(handle, skip + n))
    return lines[skip:]


def run_cli(*args: str) -> None:
    assert cli.main([str(a) for a in args]) == 0


def finetune_evaluate_predict(tmp_path, capsys, task, data, model, extra=(), predict_input=None):
    run = tmp_path / "run"
    run_cli("finetune", "--task", task, "--model", model, "--data", data, "--out", run, *COMMON, *extra)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "training.png",
                 "args.json", "task.json"):
        assert (run / name).is_file(), name
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" for r in history) and any(r["kind"] == "train" for r in history)
    capsys.readouterr()
    run_cli("evaluate", "--task", task, "--model", run, "--data", data, *extra)
    scores = json.loads(capsys.readouterr().out)
    preds = tmp_path / "pred.jsonl"
    run_cli("predict", "--task", task, "--model", run, "--input", predict_input or data, "--out", preds, *extra)
    records = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    return run, scores, records


def glue_slice(tmp_path, name, n_train=48, n_dev=24) -> Path:
    src = data_path("glue", name)
    out = tmp_path / name
    out.mkdir()
    for split, n in (("train", n_train), ("dev", n_dev)):
        (out / f"{split}.tsv").write_text("".join(head_lines(src / f"{split}.tsv", n + 1)), encoding="utf-8")
    return out


def texts_of(directory: Path) -> list[str]:
    return [line for f in sorted(directory.glob("*")) for line in f.read_text(encoding="utf-8").splitlines()]


def test_sst2_end_to_end(tmp_path, capsys):
    data = glue_slice(tmp_path, "SST-2")
    model = tiny_model_dir(tmp_path / "base", texts_of(data))
    run, scores, records = finetune_evaluate_predict(tmp_path, capsys, "sst2", data, model,
                                                     predict_input=data / "dev.tsv")
    assert len(records) == 24 and scores["examples"] == 24
    acc = accuracy_score([r["label"] for r in records], [r["prediction"] for r in records])
    assert scores["accuracy"] == pytest.approx(100 * acc)
    assert load_model(run).heads[HEAD].spec()["label_names"] == ["0", "1"]
    assert (run / "eval_sst2_dev.json").is_file()


def test_mrpc_f1_and_stsb_regression(tmp_path, capsys):
    data = glue_slice(tmp_path, "MRPC", 40, 24)
    model = tiny_model_dir(tmp_path / "base", texts_of(data))
    _, scores, records = finetune_evaluate_predict(tmp_path, capsys, "mrpc", data, model,
                                                   predict_input=data / "dev.tsv")
    gold, pred = [r["label"] for r in records], [r["prediction"] for r in records]
    assert scores["f1"] == pytest.approx(100 * f1_score(gold, pred, pos_label="1", zero_division=0))
    assert scores["accuracy"] == pytest.approx(100 * accuracy_score(gold, pred))

    sts = glue_slice(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path, "STS-B", 40, 24)
    sts_model = tiny_model_dir(tmp_path / "sts_base", texts_of(sts))
    run2 = tmp_path / "b" / "runs"
    run2.mkdir()
    _, scores, records = finetune_evaluate_predict(run2, capsys, "stsb", sts, sts_model,
                                                   predict_input=sts / "dev.tsv")
    assert load_model(run2 / "run").heads[HEAD].num_labels == 1
    assert all(isinstance(r["prediction"], float) for r in records)
    expected = pearsonr([r["label"] for r in records], [r["prediction"] for r in records])[0]
    assert scores["pearson"] == pytest.approx(100 * expected, abs=1e-4)


def test_nsmc_generic_classification(tmp_path, capsys):
    src = data_path("nsmc", "ratings_test.txt")
    lines = head_lines(src, 81)
    data = tmp_path / "nsmc"
    data.mkdir()
    (data / "train.tsv").write_text("".join(lines[:57]), encoding="utf-8")
    (data / "dev.tsv").write_text(lines[0] + "".join(lines[57:]), encoding="utf-8")
    model = tiny_model_dir(tmp_path / "base", texts_of(data))
    # the same data through the generic task with named columns, and by name
    _, scores, records = finetune_evaluate_predict(
        tmp_path, capsys, "classification", data, model, predict_input=data / "dev.tsv",
        extra=("--text-column", "document", "--label-column", "label"))
    assert len(records) == 24
    assert scores["accuracy"] == pytest.approx(
        100 * accuracy_score([r["label"] for r in records], [r["prediction"] for r in records]))
    run_cli("finetune", "--task", "nsmc", "--model", model, "--data", src, "--out", tmp_path / "nsmc_run",
            "--train-file", data / "train.tsv", "--dev-file", data / "dev.tsv", *COMMON)
    assert json.loads((tmp_path / "nsmc_run" / "summary.json").read_text())["dev_examples"] == 24


def test_squad_end_to_end(tmp_path, capsys):
    doc = json.loads(data_path("squad", "dev-v1.1.json").read_text())
    small = {"version": "1.1", "data": [
        {"title": a["title"], "paragraphs": a["paragraphs"][:3]} for a in doc["data"][:2]]}
    for article in small["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = paragraph["qas"][:4]
    data = tmp_path / "squad.json"
    data.write_text(json.dumps(small))
    texts = [p["context"] for a in small["data"] for p in a["paragraphs"]]
    texts += [q["question"] for a in small["data"] for p in a["paragraphs"] for q in p["qas"]]
    model = tiny_model_dir(tmp_path / "base", texts)
    slicing = ("--train-articles", "0:1", "--eval-articles=-1:", "--max-length", "128", "--doc-stride", "48")
    _, scores, records = finetune_evaluate_predict(tmp_path, capsys, "squad", data, model, extra=slicing)
    assert scores["examples"] == 12
    assert len(records) == 24  # predict answers every question of the file
    last = [r for r in records if r["id"] in {q["id"] for p in small["data"][1]["paragraphs"] for q in p["qas"]}]
    expected = squad_scores([r["answers"] for r in last], [r["prediction"] for r in last])
    assert scores["exact_match"] == pytest.approx(expected["exact_match"])
    assert scores["f1"] == pytest.approx(expected["f1"])
    contexts = {p["context"] for a in small["data"] for p in a["paragraphs"]}
    assert all(any(r["prediction"] in c for c in contexts) for r in records)  # spans of the original text


def test_conll_ner_end_to_end(tmp_path, capsys):
    data = tmp_path / "conll"
    data.mkdir()
    for name, n in (("eng.train", 400), ("eng.testa", 200)):
        (data / name).write_text("".join(head_lines(data_path("conll2003", name), n)))
    model = tiny_model_dir(tmp_path / "base", texts_of(data))
    run, scores, records = finetune_evaluate_predict(tmp_path, capsys, "ner", data, model,
                                                     predict_input=data / "eng.testa")
    gold, pred = [r["tags"] for r in records], [r["prediction"] for r in records]
    assert all(len(g) == len(p) for g, p in zip(gold, pred))
    assert scores["f1"] == pytest.approx(100 * seqeval_f1(gold, pred, zero_division=0))
    labels = load_model(run).heads[HEAD].spec()["label_names"]
    assert labels[0] == "O" and all(t == "O" or t[:2] in ("B-", "I-") for t in labels)


def test_swag_multiple_choice(tmp_path, capsys):
    header = "video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
    rows = []
    for i in range(24):
        good = i % 4
        endings = ["walks away slowly" if j == good else f"eats the {['sky', 'moon', 'rain'][j % 3]}"
                   for j in range(4)]
        rows.append(f'v{i},{i},"A man stands. He",A man stands.,He,gold,' + ",".join(endings) + f",{good}\n")
    data = tmp_path / "swag"
    data.mkdir()
    (data / "train.csv").write_text(header + "".join(rows[:16]))
    (data / "val.csv").write_text(header + "".join(rows[16:]))
    model = tiny_model_dir(tmp_path / "base", texts_of(data))
    _, scores, records = finetune_evaluate_predict(tmp_path, capsys, "swag", data, model,
                                                   predict_input=data / "val.csv")
    assert len(records) == 8
    assert scores["accuracy"] == pytest.approx(
        100 * accuracy_score([r["label"] for r in records], [r["prediction"] for r in records]))
    (data / "val.csv").write_text(header + rows[16].replace(",0\n", ",7\n").replace(",1\n", ",7\n")
                                  .replace(",2\n", ",7\n").replace(",3\n", ",7\n"))
    code = cli.main(["evaluate", "--task", "swag", "--model", str(tmp_path / "run"), "--data", str(data)])
    assert code == 2
    assert "val.csv:2: bad label '7'" in capsys.readouterr().err


def test_malformed_training_file_stops_with_file_and_line(tmp_path, capsys):
    data = glue_slice(tmp_path, "SST-2", 10, 5)
    lines = (data / "train.tsv").read_text().splitlines(keepends=True)
    lines[4] = "a broken row without a label\n"
    (data / "train.tsv").write_text("".join(lines))
    model = tiny_model_dir(tmp_path / "base", texts_of(data))
    code = cli.main(["finetune", "--task", "sst2", "--model", str(model), "--data", str(data),
                     "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "train.tsv:5: expected 2 columns, found 1" in capsys.readouterr().err
