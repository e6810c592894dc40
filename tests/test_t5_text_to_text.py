"""Text-to-text fine-tuning of T5 (Raffel et al. §2.4, Appendix D formats): tasks written as text, outputs
read back and scored with the task's metric, and `lmforge finetune` end to end on a tiny T5."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import data_path

from lmforge.tasks import TaskOptions
from lmforge.tasks.classification import TextExample
from lmforge.text_to_text import Pair, get_text_task, stsb_text, stsb_value


def glue_pairs(name: str, tmp_path, rows: list[str], header: str):
    (tmp_path / "train.tsv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return get_text_task(name).read(tmp_path, "train")


def test_glue_examples_become_the_papers_text(tmp_path):
    sst = glue_pairs("sst2", tmp_path, ["a gripping film\t1", "dull\t0"], "sentence\tlabel")
    assert [(p.source, p.target) for p in sst] == [("sst2 sentence: a gripping film", "positive"),
                                                    ("sst2 sentence: dull", "negative")]
    stsb = glue_pairs("stsb", tmp_path, ["0\t0\t0\t0\t0\t0\t0\tA man.\tA person.\t3.84"],
                      "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore")
    assert (stsb[0].source, stsb[0].target) == ("stsb sentence1: A man. sentence2: A person.", "3.8")


def test_mnli_puts_the_hypothesis_first(tmp_path):
    header = "\t".join(["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p", "sentence1", "sentence2",
                        "label1", "gold_label"])
    row = "\t".join(["0", "1", "2", "fiction", "-", "-", "-", "-", "The cat sat.", "A cat rests.", "entailment",
                     "entailment"])
    (pair,) = glue_pairs("mnli", tmp_path, [row], header)
    assert (pair.source, pair.target) == ("mnli hypothesis: A cat rests. premise: The cat sat.", "entailment")


@pytest.mark.parametrize("score,text", [(3.84, "3.8"), (2.9, "2.8"), (2.91, "3.0"), (0.0, "0.0"), (5.0, "5.0"),
                                        (1.1, "1.2")])
def test_stsb_rounds_to_the_nearest_fifth(score, text):
    assert stsb_text(score) == text
    assert stsb_value(text) == float(text) and stsb_value("similar") == -1.0


def test_an_output_that_is_no_label_word_counts_wrong(tmp_path):
    task = get_text_task("sst2")
    examples = [Pair("sst2 sentence: x", "positive", TextExample("x", None, "1", 1, "f")),
                Pair("sst2 sentence: y", "negative", TextExample("y", None, "0", 2, "f")),
                Pair("sst2 sentence: z", "positive", TextExample("z", None, "1", 3, "f"))]
    assert task.metrics(examples, ["positive", "negative", "positive"])["accuracy"] == pytest.approx(100.0)
    assert task.metrics(examples, ["positive", "neg", "1"])["accuracy"] == pytest.approx(100 / 3)


def test_generic_task_reads_two_columns_and_needs_them(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"q": "2 + 2", "a": "4"}\n{"q": "3 + 3", "a": "6"}\n')
    task = get_text_task("text2text", TaskOptions(source_column="q", target_column="a"))
    assert [(p.source, p.target) for p in task.read(path, "train")] == [("2 + 2", "4"), ("3 + 3", "6")]
    scores = task.metrics(task.read(path, "train"), ["4", "7"])
    assert scores["exact_match"] == 50.0 and "bleu" in scores
    with pytest.raises(ValueError, match="--source-column"):
        get_text_task("text2text")
    with pytest.raises(ValueError, match="unknown text-to-text task"):
        get_text_task("conll2003")


def test_squad_and_multi30k_formats():
    squad = get_text_task("squad").read(data_path("squad"), "dev")
    assert squad[0].source.startswith("question: ") and " context: " in squad[0].source
    assert squad[0].target == squad[0].example.answers[0]["text"]
    m30k = get_text_task("multi30k").read(data_path("multi30k"), "dev")
    assert len(m30k) > 900 and m30k[0].source.startswith("translate German to English: ")
    assert m30k[0].target and m30k[0].target == m30k[0].example
    assert get_text_task("multi30k").metrics(m30k[:3], [p.target for p in m30k[:3]])["bleu"] == pytest.approx(100.0)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A tiny T5 (random weights) with a T5 tokenizer trained on SST-2's sentences, saved as lmforge dir."""
    from lmforge.config import ModelConfig
    from lmforge.models import TaskModel, save_model
    from lmforge.tokenizers import load_tokenizer, train_tokenizer, write_hf_tokenizer_files

    sst = data_path("glue", "SST-2")
    root = tmp_path_factory.mktemp("tiny_t5")
    tok = train_tokenizer("unigram", [sst / "train.tsv"], 600, family="t5")
    write_hf_tokenizer_files(tok, root / "model", "t5")
    tok = load_tokenizer(root / "model")
    torch.manual_seed(0)
    config = ModelConfig.from_name("t5-mini", vocab_size=tok.get_vocab_size(), hidden_size=32, num_heads=2,
                                   num_layers=2, num_decoder_layers=2, intermediate_size=64, dropout=0.0,
                                   attention_dropout=0.0, ffn_dropout=0.0)
    model = TaskModel(config, {"lm": {"kind": "seq2seq_lm"}})
    save_model(model, root / "model", tok)
    return root / "model", model


def test_load_keeps_the_pretrained_lm_head(tiny_t5):
    from lmforge.text_to_text import load_model

    directory, model = tiny_t5
    loaded = load_model(directory, "task")
    assert list(loaded.heads) == ["task"]
    assert torch.equal(loaded.heads["task"].decoder.weight, model.heads["lm"].decoder.weight)  # untied v1.1 head


def test_dropout_is_re_enabled_for_fine_tuning_with_the_weights_kept(tiny_t5):
    """The `t5` recipe pre-trains without dropout; the v1.1 notes fine-tune with 0.1 (finetune --dropout)."""
    from lmforge.models.task_model import with_dropout
    from lmforge.text_to_text import load_model

    directory, _ = tiny_t5
    loaded = load_model(directory, "task")
    rebuilt = with_dropout(loaded, 0.1)
    config = rebuilt.config
    assert (config.dropout, config.attention_dropout, config.ffn_dropout, config.classifier_dropout) == (0.1,) * 4
    assert loaded.config.dropout == 0.0 and with_dropout(loaded, None) is loaded
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), rebuilt.state_dict().values()))
    ids = torch.randint(5, 100, (2, 9))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "decoder_input_ids": ids[:, :5]}

    def logits(model):
        return model(**batch).heads["task"].logits

    loaded.eval(), rebuilt.eval()
    torch.testing.assert_close(logits(rebuilt), logits(loaded), rtol=0, atol=0)
    loaded.train(), rebuilt.train()
    torch.manual_seed(0)
    assert torch.equal(logits(loaded), logits(loaded))  # no dropout in the pre-trained config
    assert not torch.equal(logits(rebuilt), logits(rebuilt))


def test_finetune_sst2_text_to_text_end_to_end(tiny_t5, tmp_path):
    from lmforge.finetune import FinetuneConfig, finetune

    directory, _ = tiny_t5
    cfg = FinetuneConfig(task="sst2", model=str(directory), data=str(data_path("glue", "SST-2")),
                         out=str(tmp_path / "run"), limit=64, eval_limit=24, epochs=2, batch_size=16, lr=1e-3,
                         eval_every=0, progress=False, eval_batch_size=8, dropout=0.1)
    summary = finetune(cfg)
    assert summary["task_type"] == "text_to_text" and summary["main_metric"] == "accuracy"
    assert 0.0 <= summary["final"]["accuracy"] <= 100.0 and summary["dev_examples"] == 24
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(train) == 8 and train[-1] < train[0]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["heads"]["task"]["kind"] == "seq2seq_lm"
    assert saved["model"]["dropout"] == saved["model"]["ffn_dropout"] == 0.1  # --dropout, as it fine-tuned


def test_predictions_read_label_words_back_as_labels_and_keep_the_text():
    task = get_text_task("sst2")
    pair = Pair("sst2 sentence: x", "positive", TextExample("x", None, "1", 1, "f"))
    assert task.prediction_record(pair, "positive") == {"text": "x", "prediction": "1", "label": "1",
                                                        "generated": "positive"}
    assert task.prediction_record(pair, "neg") == {"text": "x", "prediction": None, "label": "1", "generated": "neg"}
    stsb = get_text_task("stsb")
    assert stsb.answer("3.8") == pytest.approx(3.8) and stsb.answer("similar") == -1.0


@pytest.fixture(scope="module")
def t5_sst2_run(tiny_t5, tmp_path_factory):
    """The tiny T5 fine-tuned through the CLI on 48 SST-2 sentences (12 steps: enough to write label words),
    scored on 24 dev ones."""
    from test_finetune import glue_slice

    from lmforge.cli import main as cli

    directory, _ = tiny_t5
    tmp = tmp_path_factory.mktemp("t5_sst2")
    data, run = glue_slice(tmp, "SST-2", 48, 24), tmp / "run"
    assert cli.main(["finetune", "--task", "sst2", "--model", str(directory), "--data", str(data), "--out", str(run),
                     "--epochs", "4", "--batch-size", "16", "--lr", "1e-2", "--eval-every", "0",
                     "--eval-batch-size", "8", "--no-progress"]) == 0
    return data, run


def test_evaluate_scores_a_text_to_text_run_as_its_dev_evaluation_did(t5_sst2_run, capsys):
    from lmforge.cli import main as cli
    from lmforge.tasks import get_task

    data, run = t5_sst2_run
    summary = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--batch-size", "8",
                     "--no-progress"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == summary["selected"]["accuracy"]
    assert (scores["task"], scores["split"], scores["examples"], scores["metric_scale"]) == ("sst2", "dev", 24,
                                                                                             "percent")
    gold = get_task("sst2").read(data, "dev")
    encoder_keys = set(get_task("sst2").metrics(gold, [e.label for e in gold]))  # what an encoder run reports
    assert set(scores) == {"task", "split", "examples", "metric_scale"} | encoder_keys
    assert json.loads((run / "eval_sst2_dev.json").read_text()) == scores


def test_predict_writes_labels_of_a_text_to_text_run(t5_sst2_run, tmp_path, capsys):
    from lmforge.cli import main as cli

    data, run = t5_sst2_run
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--batch-size", "8",
                     "--no-progress"]) == 0
    accuracy = json.loads(capsys.readouterr().out)["accuracy"]
    out = tmp_path / "p.jsonl"
    assert cli.main(["predict", "--task", "SST-2", "--model", str(run), "--input", str(data / "dev.tsv"),
                     "--out", str(out), "--batch-size", "8", "--no-progress"]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    inputs = (data / "dev.tsv").read_text().splitlines()[1:]
    assert [r["text"] for r in records] == [line.split("\t")[0] for line in inputs]
    words = {"negative": "0", "positive": "1"}
    for r in records:  # a label word becomes its label; any other output is no label
        assert r["prediction"] == words.get(r["generated"])
    assert any(r["prediction"] is not None for r in records)  # the run learnt label words: the check above bites
    assert accuracy == pytest.approx(100 * sum(r["prediction"] == r["label"] for r in records) / len(records))


def test_a_text_to_text_run_refuses_another_task_in_one_line(t5_sst2_run, tmp_path, capsys):
    from _finetune_helpers import assert_refuses_other_tasks
    from test_finetune import head_lines

    from lmforge.cli import main as cli

    data, run = t5_sst2_run
    capsys.readouterr()
    assert_refuses_other_tasks(cli.main, run, data, tmp_path, capsys)
    (data / "test.tsv").write_text("".join(head_lines(data_path("glue", "SST-2", "test.tsv"), 6)), encoding="utf-8")
    assert cli.main(["evaluate", "--model", str(run), "--data", str(data), "--split", "test"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "test.tsv:2: split 'test' has no labels (5 of 5" in err


def test_a_task_rnn_is_refused_for_text_to_text(tiny_t5, tmp_path):
    from lmforge.finetune import FinetuneConfig, finetune

    directory, _ = tiny_t5
    cfg = FinetuneConfig(task="sst2", model=str(directory), data=str(data_path("glue", "SST-2")),
                         out=str(tmp_path / "run"), limit=8, eval_limit=8, task_rnn=1, progress=False)
    with pytest.raises(ValueError, match="task-rnn"):
        finetune(cfg)
