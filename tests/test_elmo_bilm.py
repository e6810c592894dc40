"""The biLM objective (Peters et al. 2018 §3.1) on prepared shards: characters from the tokenizer,
forward/backward targets, per-direction perplexity, and a tiny run of the trainer that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lmforge.config import ModelConfig
from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.pretraining import ObjectiveConfig, PretrainingDataset
from lmforge.elmo_chars import token_char_ids
from lmforge.elmo_config import ElmoConfig
from lmforge.heads.bilm import IGNORE, direction_targets
from lmforge.models import load_model
from lmforge.objectives.registry import make_objective
from lmforge.pretrain import pretrain
from lmforge.train.config import load_config

WORDS = ["ka", "lomi", "ren", "tosvu", "shal", "dequi", "bar", "nespo"]


def _documents(n_docs: int = 30, seed: int = 0) -> list[list[str]]:
    """Sentences that follow a fixed word cycle from a random start: each word predicts its
    neighbours on both sides, so both LMs can learn."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        sentences = []
        for _ in range(int(rng.integers(3, 6))):
            start, length = int(rng.integers(len(WORDS))), int(rng.integers(4, 10))
            sentences.append(" ".join(WORDS[(start + k) % len(WORDS)] for k in range(length)))
        docs.append(sentences)
    return docs


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A word-level tokenizer (ELMo's units are words) and shards prepared with it."""
    root = tmp_path_factory.mktemp("bilm")
    docs = _documents()
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator([s for d in docs for s in d],
                            trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    (root / "tok").mkdir()
    tok.save(str(root / "tok" / "tokenizer.json"))
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    prepare(PrepareConfig(tokenizer=str(root / "tok"), inputs=[str(corpus)], out=str(root / "out"),
                          valid_fraction=0.1, progress=False))
    return root / "out", tok


def tiny_elmo(vocab_size: int) -> ElmoConfig:
    return ElmoConfig(vocab_size=vocab_size, filters=((1, 8), (2, 8), (3, 16)), n_highway=1, lstm_dim=32,
                      projection_dim=16, max_characters_per_token=12, dropout=0.0)


def test_examples_carry_each_tokens_characters(prepared):
    out, tok = prepared
    data = PretrainingDataset(out, ObjectiveConfig(kind="bilm", max_seq_len=16, max_characters_per_token=12))
    batch = data.collate([data[0], data[1]])
    assert batch["char_ids"].shape == (*batch["input_ids"].shape, 12)
    sep = tok.token_to_id("[SEP]")
    for b in range(2):
        for t in range(int(batch["attention_mask"][b].sum())):
            token_id = int(batch["input_ids"][b, t])
            text = "</S>" if token_id == sep else tok.id_to_token(token_id)  # document end = bilm-tf's </S>
            assert batch["char_ids"][b, t].tolist() == token_char_ids(text, 12).tolist()


def test_directions_predict_the_neighbours():
    labels = torch.tensor([[5, 6, 7, IGNORE]])
    forward, backward = direction_targets(labels)
    assert forward.tolist() == [[6, 7, IGNORE, IGNORE]]
    assert backward.tolist() == [[IGNORE, 5, 6, IGNORE]]  # the padding position predicts nothing


def test_loss_is_the_mean_of_both_directions_full_softmax():
    """The fused loss equals the two directions' cross-entropies over full logits, averaged."""
    from lmforge.models import TaskModel

    torch.manual_seed(0)
    model = TaskModel(tiny_elmo(30), {"lm": {"kind": "bilm"}}).eval()
    ids = torch.randint(4, 30, (2, 6))
    ids[1, 4:] = 0
    mask = (torch.arange(6) < torch.tensor([[6], [4]])).long()
    labels = ids.masked_fill(mask.eq(0), IGNORE)
    chars = torch.randint(1, 262, (2, 6, 12)) * mask[..., None]
    out = model(ids, mask, char_ids=chars, lm_labels=labels)
    logits = model(ids, mask, char_ids=chars).heads["lm"].logits  # (2, B, T, V)
    expected = [torch.nn.functional.cross_entropy(logits[d].flatten(0, 1), t.flatten(), ignore_index=IGNORE)
                for d, t in enumerate(direction_targets(labels))]
    assert torch.allclose(out.loss, (expected[0] + expected[1]) / 2, atol=1e-5)
    head = out.heads["lm"]
    assert head.direction_n == {"forward": 8, "backward": 8}


def test_objective_refuses_a_transformer_and_a_width_mismatch():
    objective = make_objective(ObjectiveConfig(kind="bilm", max_seq_len=16))
    with pytest.raises(ValueError, match="needs a biLM backbone"):
        objective.check_model(ModelConfig.from_name("bert-tiny"))
    with pytest.raises(ValueError, match="max_characters_per_token=50"):
        objective.check_model(tiny_elmo(10))


def test_tiny_bilm_pretrain_learns_and_reports_both_perplexities(prepared, tmp_path):
    """`lmforge pretrain model.preset=elmo-cpu objective.kind=bilm` on the prepared shards, sized down."""
    out, _ = prepared
    config = load_config(None, [
        f"run_dir={tmp_path / 'run'}", f"data.prepared_dir={out}", "model.preset=elmo-cpu",
        "model.overrides.filters=[[1,8],[2,8],[3,16]]", "model.overrides.n_highway=1", "model.overrides.lstm_dim=32",
        "model.overrides.projection_dim=16", "model.overrides.max_characters_per_token=12",
        "model.overrides.dropout=0.0", "objective.kind=bilm", "objective.max_seq_len=16",
        "objective.max_characters_per_token=12", "optim.batch_size=8", "optim.lr=1e-2", "schedule.max_steps=40",
        "schedule.warmup=0.05", "system.log_every=1", "system.progress_bar=false", "system.device=cpu",
        "eval.batch_size=8", "eval.max_batches=4", "system.threads=1"])
    torch.manual_seed(0)
    result = pretrain(config)
    losses = [r["loss"] for r in result.history if "loss" in r and "eval_loss" not in r]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    final = [r for r in result.history if "eval_loss" in r][-1]
    # the word cycle makes each neighbour certain inside a sentence: both LMs end far below uniform
    vocab = load_model(result.final_dir).config.vocab_size
    assert 1.0 <= final["eval_forward_perplexity"] < vocab / 3, final
    assert 1.0 <= final["eval_backward_perplexity"] < vocab / 3, final
    reloaded = load_model(result.final_dir)
    assert set(reloaded.heads) == {"lm"} and isinstance(reloaded.config, ElmoConfig)
    assert (result.final_dir / "tokenizer.json").is_file()  # embed and fine-tuning read it
