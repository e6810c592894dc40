"""XLNet's permutation LM objective: target sampling, the factorization order, who sees whom (hand-built
cases and through the model), determinism, and the loss against HF's XLNetLMHeadModel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.heads import IGNORE
from lmforge.models.task_model import TaskModel
from lmforge.objectives.base import ExampleRandom
from lmforge.objectives.plm import (
    PermutationLM,
    PLMSettings,
    block_ranks,
    build_example,
    perm_mask,
    span_targets,
    top_up,
)
from lmforge.tokenizers import SpecialTokens
from lmforge.xlnet_config import XLNetConfig

SPECIAL = SpecialTokens(pad=5, unk=0, cls=3, sep=4, mask=6, bos=1, eos=2, all_ids=tuple(range(9)))


def words(rng: np.random.Generator, length: int) -> np.ndarray:
    """Word-start bits: words of 1-3 pieces."""
    ws = np.zeros(length, bool)
    at = 0
    while at < length:
        ws[at] = True
        at += int(rng.integers(1, 4))
    return ws


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


@pytest.mark.parametrize("seed", range(20))
def test_spans_are_whole_words_and_never_overshoot(seed):
    rng = np.random.default_rng(seed)
    ws = words(rng, 200)
    goal = 200 // 6
    mask = span_targets(ws, goal, rng)
    assert 0 < mask.sum() <= goal
    for beg, end in runs(mask):  # adjacent spans may merge; both ends still sit on word starts
        assert ws[beg] and end < len(ws) and ws[end]
    full = top_up(mask, np.ones(200, bool), goal, rng)
    assert full.sum() == goal and (full | ~mask).all()  # the spans are kept, the rest topped up


def test_span_lengths_follow_one_over_n():
    """One-piece words: span lengths are n-grams with p(n) ~ 1/n (spans kept apart by their context)."""
    rng = np.random.default_rng(0)
    lengths = []
    for _ in range(300):
        mask = span_targets(np.ones(400, bool), 400, rng)
        lengths += [end - beg for beg, end in runs(mask)]
    counts = np.bincount(lengths, minlength=6)[1:6] / len(lengths)
    expected = (1 / np.arange(1, 6)) / (1 / np.arange(1, 6)).sum()
    assert np.abs(counts - expected).max() < 0.03, counts


def test_block_ranks_shuffle_each_block_alike():
    ranks = block_ranks(12, 4, np.random.default_rng(3))
    blocks = ranks.reshape(3, 4)
    for b in range(3):
        assert sorted(blocks[b]) == list(range(4 * b, 4 * b + 4))  # blocks in sequence order
        assert (blocks[b] - 4 * b == blocks[0]).all()  # one shuffle for every block
    assert sorted(block_ranks(7, 0, np.random.default_rng(3))) == list(range(7))  # 0 = one block
    short = block_ranks(6, 4, np.random.default_rng(3))
    assert sorted(short[4:]) == [4, 5]


def test_perm_mask_hand_built():
    """Positions: x0 x1 x2 <sep> <cls>; targets x0, x2; order x2 (0), x0 (1), <sep> (2), <cls> (3),
    x1 a non-target. True = may not see."""
    ranks = torch.tensor([[1, 9, 0, 2, 3]])
    target = torch.tensor([[1, 0, 1, 0, 0]]).bool()
    functional = torch.tensor([[0, 0, 0, 1, 1]]).bool()
    expected = torch.tensor([
        # x0 x1 x2 sep cls
        [1, 0, 0, 1, 1],  # x0 (target, rank 1): sees x1 (non-target) and x2 (earlier), not itself
        [1, 0, 1, 1, 1],  # x1 (non-target): sees only non-targets (itself)
        [1, 0, 1, 1, 1],  # x2 (target, rank 0): sees only x1
        [0, 0, 0, 0, 1],  # <sep> (rank 2): everything up to itself
        [0, 0, 0, 0, 0],  # <cls> (rank 3, last): everything
    ]).bool()
    assert torch.equal(perm_mask(ranks, target, functional)[0], expected)


def example(length: int = 40, seed: int = 0, settings: PLMSettings | None = None) -> dict:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(9, 99, length // 2), rng.integers(9, 99, length - length // 2)
    ws = [words(rng, len(a)), words(rng, len(b))]
    return build_example([a, b], ws, SPECIAL, settings or PLMSettings(), rng)


def test_example_layout_and_target_count():
    ex = example(40)
    T = 43
    assert list(ex["input_ids"][[20, 41, 42]]) == [SPECIAL.sep, SPECIAL.sep, SPECIAL.cls]
    assert list(ex["token_type_ids"]) == [0] * 21 + [1] * 21 + [2]
    assert ex["plm_target"].sum() == T // 6  # exactly num_predict
    assert not ex["plm_target"][ex["functional"] == 1].any()  # <sep>/<cls> are never targets
    assert sorted(ex["perm_rank"]) == list(range(T))


def test_examples_are_deterministic_per_seed_epoch_index():
    class Corpus:  # two documents of sentences, word starts every other piece
        special = SPECIAL

        def read(self, lo, hi):
            return np.arange(lo, hi) % 90 + 9, np.arange(lo, hi) % 2 == 0

    objective = PermutationLM(32)
    from lmforge.objectives.mlm import FullSentences

    layout = FullSentences(np.array([0, 10, 25, 40]), np.array([10, 25, 40, 52]), np.array([0, 0, 1, 1]),
                           np.array([0, 2, 4]))
    one = objective.example(Corpus(), layout, 1, ExampleRandom(7, 0, 1))
    again = objective.example(Corpus(), layout, 1, ExampleRandom(7, 0, 1))
    other = objective.example(Corpus(), layout, 1, ExampleRandom(7, 1, 1))
    for key in one:
        assert np.array_equal(one[key], again[key]), key
    assert not all(np.array_equal(one[k], other[k]) for k in ("perm_rank", "plm_target"))
    assert np.array_equal(one["input_ids"], other["input_ids"])  # the text is fixed, the order re-drawn


def test_collate_left_pads_and_maps_targets():
    examples = [example(40, seed=1), example(20, seed=2)]
    batch = PermutationLM(64).collate(examples, SPECIAL)
    B, T = batch["input_ids"].shape
    assert (B, T) == (2, 43)
    assert batch["attention_mask"][1, :20].sum() == 0 and batch["attention_mask"][1, 20:].all()
    assert (batch["input_ids"][:, -1] == SPECIAL.cls).all()  # <cls> last in every row
    M = batch["target_mapping"].shape[1]
    assert M == 43 // 6 and (batch["plm_labels"][1] != IGNORE).sum() == 23 // 6
    rows = batch["target_mapping"][0].argmax(-1)
    assert torch.equal(batch["plm_labels"][0], batch["input_ids"][0, rows])
    assert torch.equal(rows, rows.sort().values)  # targets in position order


def tiny_model(**kw) -> TaskModel:
    config = XLNetConfig(vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37,
                         pad_token_id=SPECIAL.pad, **kw)
    return TaskModel(config, {"plm": {"kind": "plm"}}).eval()


def test_who_sees_whom_through_the_model():
    """Changing a target's own token leaves its query-stream prediction unchanged (it never sees
    itself), and leaves every non-target's content state unchanged (they never see targets); changing
    a non-target changes the predictions."""
    torch.manual_seed(0)
    model = tiny_model()
    batch = PermutationLM(64).collate([example(30, seed=4)], SPECIAL)
    target_positions = batch["target_mapping"][0].argmax(-1)
    with torch.no_grad():
        base = model(**batch).backbone
        for row, position in enumerate(target_positions.tolist()):
            changed = dict(batch, input_ids=batch["input_ids"].clone())
            changed["input_ids"][0, position] = 7 if changed["input_ids"][0, position] != 7 else 8
            out = model(**changed).backbone
            torch.testing.assert_close(out.query[0, row], base.query[0, row], atol=1e-6, rtol=0)
            plain = (batch["perm_mask"][0].sum(0) == 0)  # seen by all: non-targets
            torch.testing.assert_close(out.last_hidden_state[0, plain], base.last_hidden_state[0, plain])
        plain_position = int((batch["perm_mask"][0].sum(0) == 0).nonzero()[0])
        changed = dict(batch, input_ids=batch["input_ids"].clone())
        changed["input_ids"][0, plain_position] = 7 if changed["input_ids"][0, plain_position] != 7 else 8
        assert not torch.allclose(model(**changed).backbone.query, base.query)


def test_loss_equals_hf(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmforge.convert import load_hf

    torch.manual_seed(0)
    hf = transformers.XLNetLMHeadModel(transformers.XLNetConfig(
        vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=37, pad_token_id=SPECIAL.pad)).eval()
    hf.save_pretrained(tmp_path)
    ours = load_hf(tmp_path).eval()
    batch = PermutationLM(64).collate([example(40, seed=5), example(25, seed=6), example(33, seed=7)], SPECIAL)
    hf_batch = {k: v for k, v in batch.items() if k != "plm_labels"}
    hf_batch["perm_mask"] = batch["perm_mask"].float()
    hf_batch["target_mapping"] = batch["target_mapping"].float()
    with torch.no_grad():
        hf_loss = hf(**hf_batch, labels=batch["plm_labels"]).loss
        our_loss = ours(**batch).loss
    torch.testing.assert_close(our_loss, hf_loss, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad,message", [(dict(plm_k=0), "plm_k"), (dict(mask_beta=7), "mask_beta"),
                                         (dict(perm_size=-1), "perm_size")])
def test_bad_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        PLMSettings(**bad)


def test_check_model_refuses_other_archs():
    from lmforge.config import ModelConfig

    with pytest.raises(ValueError, match="needs an XLNet model"):
        PermutationLM(64).check_model(ModelConfig.from_name("bert-tiny"))
    with pytest.raises(ValueError, match="perm_size 24 must divide"):
        PermutationLM(64, PLMSettings(perm_size=24)).check_model(XLNetConfig.from_name("xlnet-cpu"))
