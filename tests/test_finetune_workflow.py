"""The fine-tuning workflow around the loop: task-type defaults, best-dev selection, one file split
into train/dev, evaluate/predict bound to the run's task, range-checked numbers, JSON-only stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _finetune_helpers import assert_refuses_other_tasks, tiny_model_dir
from conftest import data_path
from test_finetune import glue_slice, head_lines, texts_of

from lmforge.cli import main as cli
from lmforge.finetune_defaults import RECIPES, TASK_TYPES
from lmforge.tasks import TaskOptions, get_task
from lmforge.tasks.metrics import accuracy, pearson_spearman

QUICK = ["--no-progress"]


@pytest.fixture(autouse=True)
def _only_our_commands(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {k: cli.COMMANDS[k] for k in ("finetune", "evaluate", "predict")})


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory):
    """A tiny model fine-tuned on 48 SST-2 sentences with no hyper-parameter flags at all."""
    tmp = tmp_path_factory.mktemp("sst2")
    data = glue_slice(tmp, "SST-2", 48, 24)
    model = tiny_model_dir(tmp / "base", texts_of(data))
    run = tmp / "run"
    assert cli.main(["finetune", "--task", "sst2", "--model", str(model), "--data", str(data), "--out", str(run),
                     *QUICK]) == 0
    return data, model, run


def evals_of(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]


def test_every_task_has_a_type_with_defaults():
    types = {name: get_task(name).task_type for name in ("sst2", "cola", "mrpc", "qnli", "stsb", "ner", "squad",
                                                         "swag", "nsmc")}
    assert types == {"sst2": "classification", "cola": "classification", "mrpc": "pair_classification",
                     "qnli": "pair_classification", "stsb": "regression", "ner": "tagging", "squad": "qa",
                     "swag": "multiple_choice", "nsmc": "classification"}
    assert get_task("classification", TaskOptions(text_pair_column="b")).task_type == "pair_classification"
    assert get_task("regression").task_type == "regression"
    assert set(RECIPES) == set(TASK_TYPES)


def test_no_flags_use_the_recipe_and_keep_the_best_dev_step(sst2_run):
    _, _, run = sst2_run
    summary = json.loads((run / "summary.json").read_text())
    recipe = RECIPES["classification"]
    assert summary["hyperparameters"]["lr"] == recipe.lr
    assert summary["hyperparameters"]["batch_size"] == recipe.batch_size
    assert summary["hyperparameters"]["epochs"] == recipe.epochs
    steps_per_epoch = -(-48 // recipe.batch_size)
    assert summary["steps"] == steps_per_epoch * recipe.epochs
    history = evals_of(run)
    assert len(history) == summary["steps"]  # 3 steps an epoch, dev scored 5x an epoch -> every step
    best = max(history, key=lambda r: r["accuracy"])
    assert summary["selected"]["accuracy"] == best["accuracy"]
    assert summary["selected"]["step"] == best["step"]
    assert "dev was used for selection" in summary["selection"]
    assert summary["metric_scale"] == "percent"


def test_no_select_best_keeps_the_final_model(sst2_run, tmp_path, capsys):
    data, model, _ = sst2_run
    run = tmp_path / "final"
    assert cli.main(["finetune", "--task", "sst2", "--model", str(model), "--data", str(data), "--out", str(run),
                     "--no-select-best", "--epochs", "1", *QUICK]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected"]["step"] == summary["steps"] == evals_of(run)[-1]["step"]
    assert "dev was not used for selection" in summary["selection"]
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(summary["selected"]["accuracy"])


def jsonl_data(path: Path, n: int) -> Path:
    lines = head_lines(data_path("nsmc", "ratings_test.txt"), n, skip=1)
    with path.open("w", encoding="utf-8") as handle:
        for line in lines:
            _, text, label = line.rstrip("\n").split("\t")
            handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    return path


def test_one_data_file_is_split_and_never_scored_as_dev(tmp_path, capsys):
    data = jsonl_data(tmp_path / "my.jsonl", 40)
    model = tiny_model_dir(tmp_path / "base", [json.loads(x)["text"] for x in data.read_text().splitlines()])
    columns = ["--text-column", "text", "--label-column", "label"]
    run = tmp_path / "run"
    assert cli.main(["finetune", "--task", "classification", *columns, "--model", str(model), "--data", str(data),
                     "--out", str(run), "--epochs", "1", *QUICK]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["train_examples"], summary["dev_examples"]) == (36, 4)
    assert "held out" in summary["dev_source"]
    capsys.readouterr()
    # evaluate on the same file scores the same held-out four, not the training examples
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["examples"] == 4
    assert scores["accuracy"] == pytest.approx(evals_of(run)[-1]["accuracy"])
    # --dev-fraction 0: no dev at all, so nothing is selected on training data
    run0 = tmp_path / "run0"
    assert cli.main(["finetune", "--task", "classification", *columns, "--model", str(model), "--data", str(data),
                     "--out", str(run0), "--epochs", "1", "--dev-fraction", "0", *QUICK]) == 0
    summary0 = json.loads((run0 / "summary.json").read_text())
    assert summary0["dev_examples"] == 0 and summary0["train_examples"] == 40
    assert evals_of(run0) == [] and "no dev examples" in summary0["selection"]


def test_split_is_seeded_and_keeps_qa_paragraphs_together():
    from lmforge.tasks.base import split_holdout

    task = get_task("squad")
    examples = task.read(data_path("squad", "dev-v1.1.json"), "train")[:300]
    train, dev = split_holdout(task, examples, 0.2, seed=1)
    assert len(train) + len(dev) == 300 and 50 <= len(dev) <= 90
    assert not {e.context for e in train} & {e.context for e in dev}
    assert [e.qid for e in split_holdout(task, examples, 0.2, seed=1)[1]] == [e.qid for e in dev]


def test_evaluate_and_predict_take_the_run_task_and_refuse_another(sst2_run, tmp_path, capsys):
    data, _, run = sst2_run
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["task"] == "sst2"
    assert_refuses_other_tasks(cli.main, run, data, tmp_path, capsys)
    assert cli.main(["predict", "--task", "sst-2", "--model", str(run), "--input", str(data / "dev.tsv"),
                     "--out", str(tmp_path / "p.jsonl"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "wrote 24 predictions" in captured.err


def test_evaluate_on_a_split_without_labels_is_one_line(sst2_run, capsys):
    data, _, run = sst2_run
    (data / "test.tsv").write_text("".join(head_lines(data_path("glue", "SST-2", "test.tsv"), 6)), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test.tsv:2: split 'test' has no labels (5 of 5" in err


@pytest.mark.parametrize("flag,value,message", [
    ("--limit", "-5", "must be >= 1"), ("--batch-size", "0", "must be >= 1"), ("--epochs", "0", "must be > 0"),
    ("--lr", "-1e-5", "must be > 0"), ("--dev-fraction", "1", "must be < 1"), ("--eval-every", "-1", "must be >= 0"),
    ("--warmup-ratio", "1.5", "must be < 1"), ("--max-length", "2", "must be >= 8"), ("--doc-stride", "0", "must be >= 1"),
    ("--limit", "ten", "is not an integer"),
])
def test_numeric_arguments_are_range_checked(flag, value, message, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["finetune", "--task", "sst2", "--model", "m", "--data", "d", "--out", "o", f"{flag}={value}"])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_metrics_share_one_percent_scale():
    assert accuracy(["1", "0"], ["1", "1"])["accuracy"] == pytest.approx(50.0)
    assert pearson_spearman([1.0, 2.0, 3.0], [1.0, 2.0, 3.5])["spearman"] == pytest.approx(100.0)


def test_readme_nsmc_example_runs_on_the_shared_file(tmp_path):
    """The shared NSMC copy has only ratings_test.txt: the README's command splits it into train and dev."""
    src = data_path("nsmc", "ratings_test.txt")
    model = tiny_model_dir(tmp_path / "base", [line.split("\t")[1] for line in head_lines(src, 200, skip=1)])
    run = tmp_path / "nsmc"
    assert cli.main(["finetune", "--task", "nsmc", "--model", str(model), "--data", str(src), "--out", str(run),
                     "--limit", "40", "--eval-limit", "30", "--epochs", "1", *QUICK]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["train_examples"] == 40 and summary["dev_examples"] == 30
    assert "5000 examples (0.1) held out of" in summary["dev_source"] and "ratings_test.txt" in summary["dev_source"]


def test_sst2_defaults_schedule_dev_as_the_measured_run():
    """SST-2's 67,349 sentences at the classification recipe: dev every 842 steps (five times an epoch),
    the schedule of the bench run the recipe was chosen by."""
    from lmforge.finetune import FinetuneConfig, apply_recipe, eval_interval

    cfg = apply_recipe(FinetuneConfig(task="sst2", model="m", data="d", out="o"), get_task("sst2"))
    steps_per_epoch = -(-67349 // cfg.batch_size)
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.warmup_ratio) == (5e-5, 16, 2.0, 0.1)
    assert eval_interval(cfg, steps_per_epoch) == 842
    explicit = apply_recipe(FinetuneConfig(task="sst2", model="m", data="d", out="o", lr=1e-4, eval_every=0),
                            get_task("sst2"))
    assert explicit.lr == 1e-4 and eval_interval(explicit, steps_per_epoch) == steps_per_epoch


def test_a_run_directory_is_never_clobbered_silently(sst2_run, tmp_path, capsys):
    data, model, run = sst2_run
    args = ["finetune", "--task", "sst2", "--model", str(model), "--data", str(data), "--epochs", "1", *QUICK]
    before = (run / "summary.json").read_text()
    capsys.readouterr()
    assert cli.main([*args, "--out", str(run)]) == 2
    assert "not empty; --overwrite replaces" in capsys.readouterr().err
    assert (run / "summary.json").read_text() == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert cli.main([*args, "--out", str(other), "--overwrite"]) == 2
    assert "not a fine-tuning run" in capsys.readouterr().err and (other / "mine.txt").read_text() == "keep"
    again = tmp_path / "again"
    assert cli.main([*args, "--out", str(again)]) == 0
    (again / "eval_sst2_dev.json").write_text("{}")
    assert cli.main([*args, "--out", str(again), "--overwrite", "--lr", "1e-4"]) == 0
    assert json.loads((again / "args.json").read_text())["lr"] == 1e-4 and not (again / "eval_sst2_dev.json").exists()
