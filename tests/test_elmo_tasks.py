"""Fine-tuning on an ELMo backbone (Peters et al. 2018 §3.3): feature-based by default (frozen biLM, a
learned scalar mix of the layers and a task head), through the CLI on slices of SST-2 and CoNLL-2003,
with words the vocabulary lacks spelt from their text."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import data_path
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import accuracy_score
from test_finetune import finetune_evaluate_predict, glue_slice, head_lines, texts_of
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from lmforge.elmo_chars import token_char_ids
from lmforge.elmo_config import ElmoConfig
from lmforge.finetune import HEAD, FinetuneConfig, finetune, load_backbone_with_head
from lmforge.finetune_defaults import FEATURE_BASED_LR
from lmforge.finetune_inputs import feature_based, task_for
from lmforge.heads import build_head
from lmforge.models import TaskModel, load_model, save_model
from lmforge.models.backbone import BackboneOutput
from lmforge.nn.init import init_weights
from lmforge.tasks import get_task
from lmforge.tasks.text import load_task_tokenizer, pad_id
from lmforge.weights import load_weights

WIDTH = 12  # max_characters_per_token of the tiny models


def word_tokenizer(texts: list[str]) -> Tokenizer:
    """Words as ELMo's units (§3.4), with [CLS]/[SEP] read as the biLM's <S>/</S>; rare words are [UNK]."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(min_frequency=2, show_progress=False,
                                                             special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    return tok


def tiny_elmo_dir(directory, texts: list[str]):
    """A (randomly initialised) ELMo biLM saved as `lmforge pretrain` saves one: bilm head + tokenizer."""
    tok = word_tokenizer(texts)
    config = ElmoConfig(vocab_size=tok.get_vocab_size(), filters=((1, 8), (2, 8), (3, 16)), n_highway=1,
                        lstm_dim=24, projection_dim=8, max_characters_per_token=WIDTH)
    torch.manual_seed(0)
    save_model(TaskModel(config, {"lm": {"kind": "bilm"}}), directory, tok)
    return directory


def conll_slice(tmp_path):
    data = tmp_path / "conll"
    data.mkdir()
    for name, n in (("eng.train", 300), ("eng.testa", 150)):
        (data / name).write_text("".join(head_lines(data_path("conll2003", name), n)))
    return data


def backbone_tensors(directory) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_weights(directory / "model.safetensors").items() if k.startswith("backbone.")}


def assert_feature_based_run(pretrained, run) -> None:
    """The biLM is bit-for-bit the pre-trained one; the scalar mix trained, was saved and reloads."""
    before, after = backbone_tensors(pretrained), backbone_tensors(run)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    saved = load_weights(run / "model.safetensors")
    weights, gamma = saved[f"heads.{HEAD}.mix.weights"], saved[f"heads.{HEAD}.mix.gamma"]
    assert weights.shape == (3,)  # token layer + two biLSTM layers
    assert not torch.equal(weights, torch.zeros(3)) or float(gamma) != 1.0  # moved from its start
    head = load_model(run).heads[HEAD]
    assert head.spec()["scalar_mix"] == 3 and head.spec()["standardize_layers"]
    assert torch.equal(head.mix.weights.detach(), weights) and torch.equal(head.mix.gamma.detach(), gamma)
    # the layers' statistics from the training batches travel with the run (evaluate and predict read them)
    assert int(saved[f"heads.{HEAD}.mix.tokens_seen"]) > 0
    assert torch.equal(head.mix.running_mean, saved[f"heads.{HEAD}.mix.running_mean"])


def test_sst2_feature_based_end_to_end(tmp_path, capsys):
    data = glue_slice(tmp_path, "SST-2", 64, 24)
    pretrained = tiny_elmo_dir(tmp_path / "elmo", texts_of(data))
    run, scores, records = finetune_evaluate_predict(tmp_path, capsys, "sst2", data, pretrained,
                                                     predict_input=data / "dev.tsv")
    assert len(records) == 24 and scores["examples"] == 24
    acc = accuracy_score([r["label"] for r in records], [r["prediction"] for r in records])
    assert scores["accuracy"] == pytest.approx(100 * acc)
    assert load_model(run).heads[HEAD].spec()["style"] == "mean"
    assert load_model(run).heads[HEAD].spec()["task_rnn"] == ElmoConfig.task_rnn_layers == 1  # §3.3's task RNN
    assert_feature_based_run(pretrained, run)
    args = json.loads((run / "args.json").read_text())
    assert args["update_backbone"] is None  # the model's choice: frozen


def test_task_rnn_zero_gives_a_linear_head(tmp_path):
    data = glue_slice(tmp_path, "SST-2", 32, 8)
    pretrained = tiny_elmo_dir(tmp_path / "elmo", texts_of(data))
    finetune(FinetuneConfig(task="sst2", model=str(pretrained), data=str(data), out=str(tmp_path / "run"),
                            epochs=1, task_rnn=0, progress=False))
    head = load_model(tmp_path / "run").heads[HEAD]
    assert head.rnn is None and "task_rnn" not in head.spec()


def test_conll_tagging_scores_each_word(tmp_path, capsys):
    data = conll_slice(tmp_path)
    pretrained = tiny_elmo_dir(tmp_path / "elmo", texts_of(data))
    run, scores, records = finetune_evaluate_predict(tmp_path, capsys, "ner", data, pretrained,
                                                     predict_input=data / "eng.testa")
    gold, pred = [r["tags"] for r in records], [r["prediction"] for r in records]
    assert all(len(g) == len(p) == len(r["words"]) for g, p, r in zip(gold, pred, records))
    assert scores["f1"] == pytest.approx(100 * seqeval_f1(gold, pred, zero_division=0))
    assert_feature_based_run(pretrained, run)
    # word tokens: each word is one token, the one its tag is read from ([CLS] at 0)
    task = get_task("ner")
    sentences = task.read(data, "dev")[:20]
    encoded = task.encode(sentences, word_tokenizer(texts_of(data)), 256, None, train=False)
    for sentence, feature in zip(sentences, encoded.features):
        assert feature["word_starts"] == list(range(1, len(sentence.words) + 1))


def test_only_the_mix_and_head_learn_and_unknown_words_are_spelt(tmp_path):
    """One batch by hand: char_ids spell every word (an [UNK] from its text); gradients reach only the
    scalar mix and the head; the frozen biLM stays in eval mode while the model trains."""
    data = conll_slice(tmp_path)
    pretrained = tiny_elmo_dir(tmp_path / "elmo", texts_of(data)[:40])  # a small vocabulary: many [UNK]
    tok = load_task_tokenizer(pretrained)
    task = get_task("ner")
    sentences = task.read(data, "train")[:8]
    labels = task.label_names(sentences)
    model = load_backbone_with_head(pretrained, task.head_spec(labels))
    assert feature_based(model, None)
    model.train()
    assert not model.backbone.training and model.heads[HEAD].training
    task = task_for(model, tok, task)
    features = task.encode(sentences, tok, 64, labels, train=True).features
    batch = task.collate(features, pad_id(tok))
    unk = tok.token_to_id("[UNK]")
    spelt = [(row, pos) for row, f in enumerate(features) for pos in f.get("unknown_texts", {})]
    assert spelt, "the small vocabulary should leave words unknown"
    for row, pos in spelt:
        word = sentences[row].words[pos - 1]
        assert batch["input_ids"][row, pos] == unk
        assert batch["char_ids"][row, pos].tolist() == token_char_ids(word, WIDTH).tolist()
    model(**batch).loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    trained = {name for name, p in model.named_parameters() if p.grad is not None}
    rnn = {f"heads.{HEAD}.rnn.{n}" for n, _ in model.heads[HEAD].rnn.named_parameters()}  # the task biLSTM (§3.3)
    assert rnn and trained == rnn | {f"heads.{HEAD}.{n}" for n in ("mix.weights", "mix.gamma", "out.weight", "out.bias")}

    updated = load_backbone_with_head(pretrained, task.head_spec(labels))
    assert not feature_based(updated, True)  # --update-backbone: the biLM trains too (§3.3's alternative)
    updated.train()
    assert updated.backbone.training
    updated(**batch).loss.backward()
    assert all(p.grad is not None for p in updated.backbone.layers.parameters())


def test_unknown_words_of_a_pair_come_from_their_own_text():
    """Offsets of the second text count from its own start: each [UNK] is cut from the text it is in."""
    from lmforge.tasks.classification import TextExample

    tok = word_tokenizer(["the cat sat", "the cat sat"])
    task = get_task("mrpc")
    example = TextExample("the Zebra sat", "Quokka cat", "1", 2, "mem")
    feature = task.encode([example], tok, 32, ["0", "1"], train=True).features[0]
    # [CLS] the [UNK] sat [SEP] [UNK] cat [SEP]
    assert feature["unknown_texts"] == {2: "Zebra", 5: "Quokka"}
    assert "unknown_texts" not in task.encode([TextExample("the cat", "sat", "0", 3, "mem")], tok, 32,
                                              ["0", "1"], train=True).features[0]


def offset_features(gen: torch.Generator, width: int) -> tuple[BackboneOutput, torch.Tensor]:
    """Three layers as a frozen biLM gives them: one large offset per dimension shared by every token,
    a small token-to-token spread that carries the label (20% of tokens are class 1), and noise."""
    labels = (torch.rand(32, 10, generator=gen) < 0.2).long()
    direction = torch.ones(width) / width ** 0.5
    layers = tuple(torch.linspace(-6, 6, width) + 0.1 * (2 * labels[..., None] - 1) * direction
                   + 0.05 * torch.randn(32, 10, width, generator=gen) for _ in range(3))
    return BackboneOutput(layers[-1], torch.ones(32, 10, dtype=torch.long), hidden_states=layers), labels


@pytest.mark.parametrize("standardize", [True, False])
def test_a_head_on_offset_dominated_features_learns_only_standardized(standardize):
    """Issue 14's CoNLL F1 0.0 for trained and random ELMo alike: on frozen states as they are, a linear
    head (Adam, 1e-3) spends its steps on the shared offset and predicts the majority class; with each
    layer standardized (the ELMo default) the same head in the same 60 steps separates the classes.
    A spec that names its mix without `standardize_layers` (saved before) keeps raw layers."""
    config = ElmoConfig(vocab_size=10, filters=((1, 4),), n_highway=0, lstm_dim=8, projection_dim=8)
    torch.manual_seed(0)
    backbone = TaskModel(config).backbone
    spec = {"kind": "token_classification", "num_labels": 2, "task_rnn": 0,  # the linear head of the finding
            **({} if standardize else {"scalar_mix": 3})}
    head = build_head(config, backbone, spec)
    init_weights(head, config)
    assert head.spec().get("standardize_layers", False) == standardize
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        out, labels = offset_features(gen, config.hidden_size)
        loss = head(out, {"labels": labels}).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    out, labels = offset_features(gen, config.hidden_size)
    with torch.no_grad():
        predicted = head(out, {}).logits.argmax(-1)
    recall = float((predicted[labels == 1] == 1).float().mean())
    assert recall > 0.9 if standardize else recall == 0.0


def test_frozen_random_elmo_linear_head_tags_entities_with_the_default_rate(tmp_path):
    """`lmforge finetune --task ner --task-rnn 0` on a random-init ELMo and 160 CoNLL sentences: the linear
    head leaves the all-O prior (before the layers were standardized it predicted O everywhere). The default
    head's task biLSTM needs more than these 25 steps to leave it (bench/bench_elmo_lm.py measures it)."""
    data = tmp_path / "conll"
    data.mkdir()
    for name, n in (("eng.train", 3000), ("eng.testa", 1500)):
        (data / name).write_text("".join(head_lines(data_path("conll2003", name), n)))
    pretrained = tiny_elmo_dir(tmp_path / "elmo", texts_of(data))
    summary = finetune(FinetuneConfig(task="ner", model=str(pretrained), data=str(data), out=str(tmp_path / "run"),
                                      task_rnn=0, progress=False))
    assert summary["hyperparameters"]["lr"] == FEATURE_BASED_LR and summary["steps"] == 25
    assert summary["final"]["f1"] > 0.0 and summary["final"]["recall"] > 0.0
