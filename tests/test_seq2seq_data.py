"""Translation building blocks: token-budget batches (Vaswani et al. §5.1), the seq2seq collator, a
tiny Transformer learning from it with label smoothing, and checkpoint averaging (§6.1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lmforge.average import average_last_checkpoints, average_model_dirs
from lmforge.config import WEIGHTS_FILE, ModelConfig
from lmforge.data.parallel import read_parallel
from lmforge.data.translation import collate_pairs, shift_right, token_budget_batches
from lmforge.heads import IGNORE
from lmforge.models.task_model import TaskModel, load_model, save_model
from lmforge.train.config import load_config
from lmforge.train.optim import inverse_sqrt_peak_lr, lr_factor
from lmforge.weights import load_weights

PAD, START, EOS = 0, 0, 2
TINY = dict(vocab_size=40, hidden_size=32, num_layers=1, num_decoder_layers=2, num_heads=4, intermediate_size=64,
            max_position_embeddings=32, pad_token_id=PAD)


def test_token_budget_batches_respect_the_budget_and_cover_every_pair():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 30, 200)
    tgt = rng.integers(1, 30, 200)
    batches = token_budget_batches(src, tgt, max_tokens=120, rng=np.random.default_rng(1))
    assert sorted(i for b in batches for i in b) == list(range(200))
    for batch in batches:
        assert len(batch) * max(src[batch].max(), tgt[batch].max()) <= 120
    # length-grouped: far fewer padded tokens than batches of random pairs of the same sizes
    padded = sum(len(b) * tgt[b].max() for b in batches)
    shuffled = rng.permutation(200)
    sizes = np.cumsum([len(b) for b in batches])[:-1]
    random_padded = sum(len(b) * tgt[b].max() for b in np.split(shuffled, sizes))
    assert padded < 0.8 * random_padded
    unshuffled = token_budget_batches(src, tgt, max_tokens=120)
    assert sorted(map(tuple, unshuffled)) == sorted(map(tuple, batches))  # shuffling reorders batches only


def test_token_budget_refuses_a_pair_longer_than_the_budget():
    with pytest.raises(ValueError, match="pair 1 has 50 tokens"):
        token_budget_batches([3, 50], [4, 5], max_tokens=40)
    with pytest.raises(ValueError, match="target lengths"):
        token_budget_batches([3, 5], [4], max_tokens=40)


def test_collate_pairs_shifts_labels_right_behind_the_start_token():
    batch = collate_pairs([[5, 6, 7], [8]], [[9, 10, EOS], [11, EOS]], pad_id=PAD, start_id=START)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[9, 10, EOS], [11, EOS, IGNORE]]
    assert batch["decoder_input_ids"].tolist() == [[START, 9, 10], [START, 11, EOS]]
    assert batch["decoder_attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert shift_right(torch.tensor([[4, IGNORE]]), 7, PAD).tolist() == [[7, 4]]
    with pytest.raises(ValueError, match="empty"):
        collate_pairs([[5], []], [[9], [3]], pad_id=PAD, start_id=START)


def test_a_tiny_transformer_learns_to_copy_with_label_smoothing():
    """Teacher-forced loss of the seq2seq head falls on a copy task: the pieces fit together."""
    torch.manual_seed(0)
    model = TaskModel(ModelConfig.from_name("transformer-base", **TINY, dropout=0.0),
                      {"lm": {"kind": "seq2seq_lm", "label_smoothing": 0.1}})
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.98), eps=1e-9)  # §5.3
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, 40, (int(n),), generator=g).tolist() for n in torch.randint(2, 8, (16,), generator=g)]
    batch = collate_pairs(rows, [r + [EOS] for r in rows], pad_id=PAD, start_id=model.config.decoder_start_id)
    losses = []
    for _ in range(25):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def tiny_dir(path, seed: int, **overrides):
    torch.manual_seed(seed)
    model = TaskModel(ModelConfig.from_name("transformer-base", **{**TINY, **overrides}),
                      {"lm": {"kind": "seq2seq_lm"}})
    return save_model(model, path)


def test_average_is_the_elementwise_mean(tmp_path):
    dirs = [tiny_dir(tmp_path / f"c{i}", seed=i) for i in range(3)]
    out = average_model_dirs(dirs, tmp_path / "avg")
    states = [load_weights(d / WEIGHTS_FILE) for d in dirs]
    averaged = load_weights(out / WEIGHTS_FILE)
    for key, tensor in averaged.items():
        torch.testing.assert_close(tensor, sum(s[key] for s in states) / 3, atol=1e-7, rtol=1e-6)
    load_model(out)  # a complete model directory
    other = tiny_dir(tmp_path / "other", seed=0, hidden_size=16)
    with pytest.raises(ValueError, match="different model"):
        average_model_dirs([dirs[0], other], tmp_path / "bad")


def test_average_last_checkpoints_of_a_run(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (100, 200, 300):
        directory = tiny_dir(root / f"step-{step:07d}", seed=step)
        torch.save({"step": step}, directory / "trainer_state.pt")
        torch.save({}, directory / "rng-rank0.pt")
    out = average_last_checkpoints(root, 2, tmp_path / "avg")
    expected = average_model_dirs([root / "step-0000200", root / "step-0000300"], tmp_path / "ref")
    a, b = load_weights(out / WEIGHTS_FILE), load_weights(expected / WEIGHTS_FILE)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="3 intact checkpoints, 5 asked"):
        average_last_checkpoints(root, 5, tmp_path / "avg5")


# ----------------------------------------------------------------------------------- parallel text
def write(path, lines: list[str], gz: bool = False):
    data = "".join(line + "\n" for line in lines).encode()
    if gz:
        import gzip

        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_read_parallel_counts_empty_sides_and_ratio_outliers(tmp_path):
    src = write(tmp_path / "s.de.gz", ["ein Hund", "", "zwei Katzen  ", "ja", "ein Mann"], gz=True)
    tgt = write(tmp_path / "t.en", ["a dog", "nothing", "two cats", "yes " * 12, ""])
    text = read_parallel(src, tgt)
    assert text.sources == ["ein Hund", "zwei Katzen"] and text.targets == ["a dog", "two cats"]
    stats = text.stats
    assert (stats.lines, stats.pairs, stats.empty, stats.ratio_outliers) == (5, 2, 2, 1)
    assert stats.examples[0] == f"{src}:2: empty source; pair skipped"
    assert any(note.startswith(f"{src}:4: 1 vs 12 words") for note in stats.examples)


def test_read_parallel_refuses_misaligned_files(tmp_path):
    src = write(tmp_path / "s", ["a", "b", "c"])
    tgt = write(tmp_path / "t", ["x", "y"])
    for pair in ((src, tgt), (tgt, src)):  # the longer file runs out last or first
        with pytest.raises(ValueError, match=r"/s has 3 lines but .*/t has 2: the files are not aligned"):
            read_parallel(*pair)


def test_read_parallel_tsv_and_jsonl(tmp_path):
    tsv = write(tmp_path / "pairs.tsv", ["ein Hund\ta dog", "ja\tyes"])
    assert read_parallel(tsv).targets == ["a dog", "yes"]
    bad = write(tmp_path / "bad.tsv", ["ein Hund\ta dog", "no tab here"])
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 2 tab-separated columns"):
        read_parallel(bad)
    rows = [json.dumps({"de": "ein Hund", "en": "a dog"}), json.dumps({"de": "ja"})]
    jsonl = write(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: expected string fields \['de', 'en'\]"):
        read_parallel(jsonl, fields=("de", "en"))
    with pytest.raises(ValueError, match="give the source and the target file"):
        read_parallel(write(tmp_path / "pairs.txt", ["a"]))


def test_read_parallel_on_multi30k(shared_data):
    folder = shared_data("multi30k")
    text = read_parallel(folder / "val.de.gz", folder / "val.en.gz")
    assert text.stats.lines == 1014 and text.stats.pairs == len(text.sources) == len(text.targets) > 1000
    assert text.sources[0].startswith("Eine Gruppe von Männern")


# ----------------------------------------------------------------------------------- schedule
def test_inverse_sqrt_schedule_is_vaswanis():
    """§5.3: lrate = d^-0.5 min(step^-0.5, step warmup^-1.5), as peak lr x lr_factor(step / total)."""
    d, warmup, total = 512, 4000, 100_000
    peak = inverse_sqrt_peak_lr(d, warmup)
    assert peak == pytest.approx(6.99e-4, rel=1e-3)
    for step in (1, 400, 4000, 9000, 100_000):
        paper = d ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        ours = peak * lr_factor(step / total, warmup / total, "inverse_sqrt")
        assert ours == pytest.approx(paper, rel=1e-9)
    with pytest.raises(ValueError, match="warmup > 0"):
        lr_factor(0.5, 0.0, "inverse_sqrt")
    config = load_config(None, ["schedule.kind=inverse_sqrt", "schedule.warmup=0.04", "schedule.max_steps=10"])
    assert config.schedule.kind == "inverse_sqrt"
    with pytest.raises(ValueError, match="needs schedule.warmup > 0"):
        load_config(None, ["schedule.kind=inverse_sqrt", "schedule.warmup=0", "schedule.max_steps=10"])
