"""Words as ELMo's units (Peters et al. 2018 §3): `tokenizer train --kind word`, and the word-level
baseline biLM (preset elmo-cpu-word: elmo-cpu's biLSTM and softmax over a word embedding table) that
pre-trains, embeds and fine-tunes through the same commands as the character ELMo."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import data_path
from test_elmo_bilm import prepared  # noqa: F401  (the module-scoped fixture: shards of a word corpus)
from test_elmo_tasks import conll_slice, word_tokenizer
from test_finetune import finetune_evaluate_predict, head_lines, run_cli, texts_of

from lmforge.elmo_config import ElmoConfig
from lmforge.elmo_hdf5 import export_elmo
from lmforge.features import embed_texts
from lmforge.finetune import HEAD, load_backbone_with_head
from lmforge.finetune_inputs import task_for
from lmforge.models import TaskModel, load_model, save_model
from lmforge.pretrain import pretrain
from lmforge.tasks import get_task
from lmforge.tasks.text import load_task_tokenizer
from lmforge.tokenizers import TEMPLATES, load_tokenizer, special_tokens, train_tokenizer
from lmforge.train.config import load_config


@pytest.fixture(scope="module")
def wiki_slice(tmp_path_factory):
    path = tmp_path_factory.mktemp("wiki") / "wiki.txt"
    path.write_text("".join(head_lines(data_path("wikitext-2", "wiki.train.tokens"), 2000)), encoding="utf-8")
    return path


def test_word_kind_keeps_the_most_frequent_whitespace_words(wiki_slice, tmp_path):
    run_cli("tokenizer", "train", "--kind", "word", "--no-lowercase", "--vocab-size", "3000", "--corpus", wiki_slice,
            "--out", tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    specials = TEMPLATES["bert"].specials  # the default family: ELMo reads [CLS]/[SEP] as <S>/</S>
    assert [tok.id_to_token(i) for i in range(len(specials))] == list(specials)
    assert tok.get_vocab_size() == 3000
    counts = Counter(wiki_slice.read_text(encoding="utf-8").split())
    kept = set(tok.get_vocab()) - set(specials)
    assert len(kept) == 3000 - len(specials) and kept <= set(counts)
    # every kept word is at least as frequent as every word left out
    assert min(counts[w] for w in kept) >= max(counts[w] for w in set(counts) - kept)
    # WikiText's own tokens stay whole, case is kept, and a word outside the vocabulary is one [UNK]
    text = "The U.S. army @-@ <unk> , Zzyzzx"
    enc = tok.encode(text, add_special_tokens=False)
    assert enc.tokens[:6] == ["The", "U.S.", "army", "@-@", "<unk>", ","] and enc.ids[6] == special_tokens(tok).unk
    assert tok.decode(tok.encode("The army , the city").ids) == "The army , the city"


def test_word_kind_gives_one_token_per_conll_word(wiki_slice):
    tok = train_tokenizer("word", [wiki_slice], 3000, lowercase=False)
    words = ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    enc = tok.encode(words, is_pretokenized=True)
    assert enc.word_ids == [None, *range(len(words)), None]  # [CLS] w0 ... w8 [SEP]


def test_word_kind_loads_in_transformers_with_our_ids(wiki_slice, tmp_path):
    transformers = pytest.importorskip("transformers")
    run_cli("tokenizer", "train", "--kind", "word", "--no-lowercase", "--vocab-size", "2000", "--corpus", wiki_slice,
            "--out", tmp_path / "tok")
    ours = load_tokenizer(tmp_path / "tok")
    hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    for text in ("The army of the city", "a Zzyzzx word , and another", "two  spaces"):
        assert hf(text)["input_ids"] == ours.encode(text).ids


def test_word_preset_is_elmo_cpu_with_a_word_table():
    chars, words = ElmoConfig.from_name("elmo-cpu", vocab_size=50), ElmoConfig.from_name("elmo-cpu-word", vocab_size=50)
    for field in ("lstm_dim", "projection_dim", "num_layers", "cell_clip", "proj_clip", "use_skip_connections",
                  "dropout"):
        assert getattr(chars, field) == getattr(words, field), field
    assert chars.reads_characters and not words.reads_characters
    torch.manual_seed(0)
    a, b = (TaskModel(c, {"lm": {"kind": "bilm"}}) for c in (chars, words))
    shapes = {m: {k: v.shape for k, v in m.state_dict().items() if not k.startswith("backbone.token_encoder.")}
              for m in (a, b)}
    assert shapes[a] == shapes[b]  # the same biLSTM and softmax; only the token layer differs
    assert b.backbone.input_names == ("input_ids", "attention_mask")
    assert b.backbone.token_encoder.weight.shape == (50, 128)
    assert b.backbone.input_embeddings() is b.backbone.token_encoder
    with pytest.raises(ValueError, match="token_encoder must be one of"):
        ElmoConfig(token_encoder="bytes")


def test_word_baseline_reads_only_ids_and_its_token_layer_is_the_table():
    config = ElmoConfig(vocab_size=20, token_encoder="word_embedding", lstm_dim=12, projection_dim=6, dropout=0.0)
    torch.manual_seed(0)
    backbone = TaskModel(config).backbone.eval()
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    mask = (ids != 0).long()
    out = backbone(ids, mask, output_hidden_states=True)
    table = backbone.token_encoder.weight
    assert torch.equal(out.hidden_states[0], torch.cat([table[ids], table[ids]], dim=-1))
    # the second row's real tokens do not see its padding: equal to the row alone
    alone = backbone(ids[1:, :2], mask[1:, :2]).last_hidden_state
    assert torch.allclose(out.last_hidden_state[1, :2], alone[0], atol=1e-6)
    assert torch.equal(backbone(ids).last_hidden_state[0], out.last_hidden_state[0])  # no mask: every id is real
    with pytest.raises(ValueError, match="needs input_ids"):
        backbone(char_ids=torch.ones(1, 2, 50, dtype=torch.long))


def test_bilm_tf_export_refuses_the_word_baseline(tmp_path):
    model = TaskModel(ElmoConfig.from_name("elmo-cpu-word", vocab_size=30, lstm_dim=8, projection_dim=4))
    with pytest.raises(ValueError, match="word_embedding token encoder.*AllenNLP cannot read"):
        export_elmo(model, tmp_path / "out")
    assert not (tmp_path / "out" / "options.json").exists()


def test_word_baseline_pretrains_through_the_same_command(prepared, tmp_path):  # noqa: F811
    """The elmo recipe's command with model.preset=elmo-cpu-word, sized down: the same bilm objective
    and batches (characters included, ignored by the word encoder), both perplexities reported."""
    out, _ = prepared
    config = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.prepared_dir={out}", "model.preset=elmo-cpu-word",
        "model.overrides.lstm_dim=32", "model.overrides.projection_dim=16", "model.overrides.dropout=0.0",
        "objective.kind=bilm", "objective.max_seq_len=16", "optim.batch_size=8", "optim.lr=1e-2",
        "schedule.max_steps=40", "schedule.warmup=0.05", "system.log_every=1", "system.progress_bar=false",
        "system.device=cpu", "eval.batch_size=8", "eval.max_batches=4", "system.threads=1"])
    torch.manual_seed(0)
    result = pretrain(config)
    losses = [r["loss"] for r in result.history if "loss" in r and "eval_loss" not in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    final = [r for r in result.history if "eval_loss" in r][-1]
    model = load_model(result.final_dir)
    assert model.config.token_encoder == "word_embedding"
    assert 1.0 <= final["eval_forward_perplexity"] < model.config.vocab_size / 3, final
    assert 1.0 <= final["eval_backward_perplexity"] < model.config.vocab_size / 3, final


def tiny_word_elmo_dir(directory, texts: list[str]):
    tok = word_tokenizer(texts)
    config = ElmoConfig(vocab_size=tok.get_vocab_size(), token_encoder="word_embedding", lstm_dim=24,
                        projection_dim=8)
    torch.manual_seed(0)
    save_model(TaskModel(config, {"lm": {"kind": "bilm"}}), directory, tok)
    return directory


def test_word_baseline_embeds_and_fine_tunes_feature_based(tmp_path, capsys):
    data = conll_slice(tmp_path)
    pretrained = tiny_word_elmo_dir(tmp_path / "elmo", texts_of(data))
    tok = load_task_tokenizer(pretrained)
    vectors = embed_texts(load_model(pretrained), tok, ["EU rejects German call", "Peter"], layers=[0, 1, 2],
                          normalize=False)
    assert vectors.shape == (2, 3, 16)
    task = get_task("ner")
    model = load_backbone_with_head(pretrained, task.head_spec(["O", "B-PER"]))
    assert task_for(model, tok, task) is task  # ids are all the word encoder reads: nothing to add
    run, scores, records = finetune_evaluate_predict(tmp_path, capsys, "ner", data, pretrained,
                                                     predict_input=data / "eng.testa")
    assert all(len(r["prediction"]) == len(r["words"]) for r in records)
    saved = load_model(run)
    assert saved.config.token_encoder == "word_embedding" and saved.heads[HEAD].spec()["scalar_mix"] == 3
    before = load_model(pretrained).backbone.state_dict()
    assert all(torch.equal(before[k], v) for k, v in saved.backbone.state_dict().items())  # frozen (§3.3)
    assert json.loads((run / "args.json").read_text())["update_backbone"] is None
