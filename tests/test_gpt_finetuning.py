"""GPT-1 fine-tuning (Radford et al. 2018 §3.3): input transforms with added tokens, both orders for
similarity, the auxiliary LM loss (λ = 0.5), and an SST-2 slice that learns and exports to transformers."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge import gpt_finetuning as G
from lmforge.config import ModelConfig
from lmforge.models import TaskModel, save_model
from lmforge.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from tests.conftest import data_path

    sst2 = data_path("glue", "SST-2", "train.tsv")
    corpus = tmp_path_factory.mktemp("corpus") / "sst2.txt"
    lines = sst2.read_text().splitlines()[1:4001]
    corpus.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n")
    return train_tokenizer("bpe", [corpus], 800, family="gpt2")


def tiny_gpt1(vocab: int) -> TaskModel:
    config = ModelConfig.from_name("openai-gpt", vocab_size=vocab, hidden_size=64, num_layers=2, num_heads=4,
                                   max_position_embeddings=128)
    return TaskModel(config, {"lm": {"kind": "clm"}})


def test_transforms_wrap_texts_and_pairs(tokenizer):
    tok = G.add_transform_tokens(type(tokenizer).from_str(tokenizer.to_str()))
    start, delim, extract = (tok.token_to_id(t) for t in (G.START, G.DELIMITER, G.EXTRACT))
    single = tok.encode("a fine film").ids
    assert single[0] == start and single[-1] == extract and delim not in single
    pair = tok.encode("a fine film", "it was good").ids
    assert pair[0] == start and pair[-1] == extract and pair.count(delim) == 1
    assert pair[: pair.index(delim)] == single[:-1]  # `<s> A $ B <e>`


def test_resize_keeps_rows_and_ties_the_lm_head(tokenizer):
    model = tiny_gpt1(tokenizer.get_vocab_size())
    old = model.backbone.input_embeddings().weight.detach().clone()
    model.resize_vocabulary(old.shape[0] + 3)
    table = model.backbone.input_embeddings().weight
    assert table.shape[0] == old.shape[0] + 3 and torch.equal(table[:-3], old)
    assert model.heads["lm"].decoder.weight is table and model.config.vocab_size == old.shape[0] + 3


def test_similarity_reads_both_orders_and_adds_their_states(tokenizer):
    from lmforge.tasks import get_task

    task = get_task("stsb")
    config = tiny_gpt1(tokenizer.get_vocab_size()).config
    model = TaskModel(config, {"task": task.head_spec(None)})
    model, tok, wrapped = G.adapt(model, type(tokenizer).from_str(tokenizer.to_str()), task, "task")
    assert model.heads["task"].kind == "similarity" and isinstance(wrapped, G.BothOrders)
    from lmforge.tasks.classification import TextExample

    example = TextExample("a man plays", "someone is playing", 3.2, 1, "x")
    swapped = TextExample("someone is playing", "a man plays", 3.2, 1, "x")
    batch = wrapped.collate(wrapped.encode([example, swapped], tok, 64, None, True).features, 0)
    assert batch["input_ids"].shape[:2] == (2, 2)
    model.eval()
    with torch.no_grad():
        scores = model(**batch, heads=("task",)).heads["task"].logits
    torch.testing.assert_close(scores[0], scores[1])  # the order of the pair no longer matters


@pytest.mark.slow
def test_gpt1_learns_an_sst2_slice_and_exports_to_transformers(tokenizer, tmp_path, shared_data):
    transformers = pytest.importorskip("transformers")
    from lmforge.cli.main import main
    from lmforge.finetune import FinetuneConfig, finetune, load_finetuned
    from lmforge.tasks.text import load_task_tokenizer

    torch.manual_seed(0)
    save_model(tiny_gpt1(tokenizer.get_vocab_size()), tmp_path / "gpt1", tokenizer)
    data = shared_data("glue", "SST-2")
    summary = finetune(FinetuneConfig(task="sst2", model=str(tmp_path / "gpt1"), data=str(data),
                                      out=str(tmp_path / "run"), limit=128, eval_limit=8, epochs=12, batch_size=16,
                                      lr=1e-3, progress=False, select_best=False))
    losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in losses if r["kind"] == "train"]
    first, last = sum(train[:10]) / 10, sum(train[-10:]) / 10
    assert last < first - 0.1, (first, last)  # task + 0.5 x LM loss falls
    assert summary["steps"] == 96  # 12 epochs x 8 batches
    from lmforge.finetune import evaluate_examples
    from lmforge.tasks import get_task

    task = get_task("sst2")
    seen = task.read(data, "train")[:128]
    ours, _ = load_finetuned(tmp_path / "run")
    _, fitted = evaluate_examples(ours, task, seen, load_task_tokenizer(tmp_path / "run"), 64, 64,
                                  torch.device("cpu"))
    assert fitted["accuracy"] > 75.0, fitted  # it learnt its training slice (majority class: ~56%)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert list(config["heads"]) == ["task"]  # the auxiliary LM head trained, then was dropped
    assert config["model"]["vocab_size"] == tokenizer.get_vocab_size() + 3

    assert main(["convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "OpenAIGPTForSequenceClassification"
    ours, _ = load_finetuned(tmp_path / "run")
    tok = load_task_tokenizer(tmp_path / "run")
    ids = [tok.encode("a gorgeous , witty film").ids, tok.encode("dull").ids]
    pad = hf.config.pad_token_id
    width = max(map(len, ids))
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        theirs = hf(input_ids=input_ids, attention_mask=mask).logits
        mine = ours.eval()(input_ids, mask).heads["task"].logits
    torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
