"""XLNet parity with transformers: all six HF classes, a left-padded batch with segments, with and
without permutation masks / target mappings (two streams) and segment memory.

A random transformers model (biases and LayerNorms randomised too) is saved, converted with
lmforge.convert, and both run the same batch: every hidden state of both streams, the logits, the
loss and the new memory must agree to 1e-5. lmforge -> HF -> lmforge must be bit-exact and the
export must load in transformers as the same class with nothing missing or unexpected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from parity_helpers import CheckpointStore, assert_loads_in_transformers, assert_round_trip, random_hf_model  # noqa: E402

from lmforge.convert import load_hf  # noqa: E402
from lmforge.heads import IGNORE  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)
B, T, C, M = 3, 7, 2, 3  # batch, length, choices, predictions per row
LENGTHS = (7, 5, 3)  # left padding
SUFFIXES = ["Model", "LMHeadModel", "ForSequenceClassification", "ForTokenClassification", "ForMultipleChoice",
            "ForQuestionAnsweringSimple"]
AUTO = {"Model": "AutoModel", "LMHeadModel": "AutoModelForCausalLM",
        "ForSequenceClassification": "AutoModelForSequenceClassification",
        "ForTokenClassification": "AutoModelForTokenClassification",
        "ForMultipleChoice": "AutoModelForMultipleChoice",
        "ForQuestionAnsweringSimple": "AutoModelForQuestionAnswering"}
PAD = 0


def hf_config(suffix: str, mem_len: int | None = None):
    labels: dict = {}
    if suffix == "ForSequenceClassification":
        labels = {"id2label": {0: "neg", 1: "neu", 2: "pos"}}
    elif suffix == "ForTokenClassification":
        labels = {"id2label": {i: f"TAG{i}" for i in range(5)}}
    return transformers.XLNetConfig(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=37, mem_len=mem_len,
                                    pad_token_id=PAD, **labels)


def hf_checkpoint(checkpoints: CheckpointStore, suffix: str,
                  mem_len: int | None = None) -> tuple[torch.nn.Module, Path]:
    return checkpoints.get(f"xlnet-{suffix}-{mem_len}", lambda: random_hf_model(
        getattr(transformers, "XLNet" + suffix), hf_config(suffix, mem_len), seed=1234,
        randomise=lambda name: name.endswith("bias") or "layer_norm" in name))


def make_batch(suffix: str, seed: int = 7) -> tuple[dict, dict, dict]:
    """(inputs, hf labels, our labels): left padding, segments A=0, B=1, <cls>=2, padding 3."""
    g = torch.Generator().manual_seed(seed)
    shape = (B, C, T) if suffix == "ForMultipleChoice" else (B, T)
    ids = torch.randint(6, 99, shape, generator=g)
    mask = torch.zeros(shape, dtype=torch.long)
    types = torch.full(shape, 3, dtype=torch.long)
    for b, length in enumerate(LENGTHS):
        mask[b, ..., T - length:] = 1
        types[b, ..., T - length:] = 0
        types[b, ..., T - length // 2 - 1:] = 1
        types[b, ..., -1] = 2
    ids[mask == 0] = PAD
    inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    hf: dict = {}
    ours: dict = {}
    if suffix == "ForSequenceClassification":
        hf["labels"] = ours["labels"] = torch.tensor([0, 2, 1])
    if suffix == "ForMultipleChoice":
        hf["labels"] = ours["labels"] = torch.tensor([1, 0, 1])
    if suffix == "ForTokenClassification":
        hf["labels"] = ours["labels"] = torch.randint(0, 5, shape, generator=g).masked_fill(mask == 0, IGNORE)
    if suffix == "ForQuestionAnsweringSimple":
        start, end = torch.tensor([1, 4, 5]), torch.tensor([3, 4, 6])
        hf.update(start_positions=start, end_positions=end)
        ours.update(start_positions=start, end_positions=end)
    if suffix == "LMHeadModel":
        lm = ids.masked_fill(mask == 0, IGNORE)
        hf["labels"], ours["plm_labels"] = lm, lm
    return inputs, hf, ours


def two_stream_inputs(inputs: dict, seed: int = 11) -> tuple[dict, torch.Tensor]:
    """A random perm_mask (some rows see nothing: the reference's uniform fallback is exercised) and
    a target mapping of M one-hot rows on real positions, the last row of the last example all zero
    (padding); labels (B, M)."""
    g = torch.Generator().manual_seed(seed)
    perm = (torch.rand(B, T, T, generator=g) < 0.5).float()
    mapping = torch.zeros(B, M, T)
    for b, length in enumerate(LENGTHS):
        positions = T - length + torch.randperm(length, generator=g)[:M - (b == B - 1)]
        mapping[b, torch.arange(len(positions)), positions] = 1.0
    labels = (mapping * inputs["input_ids"][:, None].float()).sum(-1).long()
    labels[mapping.sum(-1) == 0] = IGNORE
    return {**inputs, "perm_mask": perm, "target_mapping": mapping}, labels


def head_pairs(suffix: str, hf_out, ours_out) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    if suffix == "Model":
        return [("last_hidden_state", hf_out.last_hidden_state, ours_out.backbone.last_hidden_state)]
    if suffix == "ForQuestionAnsweringSimple":
        logits = ours_out.heads["qa"].logits
        return [("start", hf_out.start_logits, logits[..., 0]), ("end", hf_out.end_logits, logits[..., 1])]
    (head,) = ours_out.heads.values()
    return [("logits", hf_out.logits, head.logits)]


def assert_states(hf_states, ours_backbone) -> None:
    """HF interleaves (h, g) per layer when the query stream runs; ours keeps the streams apart."""
    ours_states = ours_backbone.hidden_states
    if ours_backbone.query_hidden_states is not None:
        ours_states = [s for pair in zip(ours_states, ours_backbone.query_hidden_states) for s in pair]
    assert len(hf_states) == len(ours_states)
    for i, (a, b) in enumerate(zip(hf_states, ours_states)):
        torch.testing.assert_close(b, a, **TOL, msg=lambda m, i=i: f"hidden state {i}: {m}")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_hf_to_lmforge_parity(suffix, hf_checkpoints):
    hf_model, directory = hf_checkpoint(hf_checkpoints, suffix)
    ours = load_hf(directory).eval()
    inputs, hf_labels, ours_labels = make_batch(suffix)
    with torch.no_grad():
        hf_out = hf_model(**inputs, output_hidden_states=True)
        ours_out = ours(**inputs, output_hidden_states=True)
        assert_states(hf_out.hidden_states, ours_out.backbone)
        for what, a, b in head_pairs(suffix, hf_out, ours_out):
            torch.testing.assert_close(b, a, **TOL, msg=lambda m, what=what: f"{what}: {m}")
        hf_loss = hf_model(**inputs, **hf_labels).loss if hf_labels else None
        ours_loss = ours(**inputs, **ours_labels).loss if ours_labels else None
    if hf_labels:
        torch.testing.assert_close(ours_loss, hf_loss, **TOL)


@pytest.mark.parametrize("suffix", ["Model", "LMHeadModel"])
def test_two_stream_parity(suffix, hf_checkpoints):
    """perm_mask + target_mapping: the query stream's states, the (B, M, V) logits and the loss."""
    hf_model, directory = hf_checkpoint(hf_checkpoints, suffix)
    ours = load_hf(directory).eval()
    inputs, _, _ = make_batch(suffix)
    inputs, labels = two_stream_inputs(inputs)
    with torch.no_grad():
        hf_out = hf_model(**inputs, output_hidden_states=True)
        ours_out = ours(**inputs, output_hidden_states=True)
        assert ours_out.backbone.query is not None
        assert_states(hf_out.hidden_states, ours_out.backbone)
        if suffix == "Model":
            torch.testing.assert_close(ours_out.backbone.query, hf_out.last_hidden_state, **TOL)
            return
        torch.testing.assert_close(ours_out.heads["plm"].logits, hf_out.logits, **TOL)
        hf_loss = hf_model(**inputs, labels=labels).loss
        ours_loss = ours(**inputs, plm_labels=labels).loss
    torch.testing.assert_close(ours_loss, hf_loss, **TOL)


def test_perm_mask_without_target_mapping(hf_checkpoints):
    """perm_mask alone shapes the content stream (every position still sees itself)."""
    hf_model, directory = hf_checkpoint(hf_checkpoints, "LMHeadModel")
    ours = load_hf(directory).eval()
    inputs, _, _ = make_batch("LMHeadModel")
    inputs, _ = two_stream_inputs(inputs)
    del inputs["target_mapping"]
    with torch.no_grad():
        hf_out = hf_model(**inputs, output_hidden_states=True)
        ours_out = ours(**inputs, output_hidden_states=True)
    assert ours_out.backbone.query is None
    assert_states(hf_out.hidden_states, ours_out.backbone)
    torch.testing.assert_close(ours_out.heads["plm"].logits, hf_out.logits, **TOL)


@pytest.mark.parametrize("two_stream", [False, True], ids=["content", "two-stream"])
def test_memory_parity(two_stream, hf_checkpoints):
    """Segment recurrence (§2.4): two consecutive segments; the second attends to the first's cached
    states. Outputs and the new memory of both calls agree with HF's `mems`."""
    mem_len = 5
    hf_model, directory = hf_checkpoint(hf_checkpoints, "LMHeadModel", mem_len)
    ours = load_hf(directory).eval()
    assert ours.config.mem_len == mem_len
    first, _, _ = make_batch("LMHeadModel", seed=1)
    second, _, _ = make_batch("LMHeadModel", seed=2)
    if two_stream:
        second, labels = two_stream_inputs(second)
    with torch.no_grad():
        hf_a = hf_model(**first, use_mems=True)
        ours_a = ours(**first)
        for a, b in zip(hf_a.mems, ours_a.backbone.mems, strict=True):
            torch.testing.assert_close(b, a.transpose(0, 1), **TOL)
        hf_b = hf_model(**second, mems=hf_a.mems, use_mems=True, output_hidden_states=True)
        ours_b = ours(**second, mems=ours_a.backbone.mems, output_hidden_states=True)
        assert_states(hf_b.hidden_states, ours_b.backbone)
        torch.testing.assert_close(ours_b.heads["plm"].logits, hf_b.logits, **TOL)
        for a, b in zip(hf_b.mems, ours_b.backbone.mems, strict=True):
            torch.testing.assert_close(b, a.transpose(0, 1), **TOL)
        if two_stream:
            hf_loss = hf_model(**second, mems=hf_a.mems, labels=labels).loss
            ours_loss = ours(**second, mems=ours_a.backbone.mems, plm_labels=labels).loss
            torch.testing.assert_close(ours_loss, hf_loss, **TOL)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_lmforge_to_hf_round_trip(suffix, tmp_path, hf_checkpoints):
    hf_model, directory = hf_checkpoint(hf_checkpoints, suffix)
    ours = load_hf(directory).eval()
    assert_round_trip(ours, tmp_path / "hf")
    reloaded = assert_loads_in_transformers(getattr(transformers, AUTO[suffix]), tmp_path / "hf", hf_model).eval()
    assert type(reloaded) is type(hf_model)
    if "Classification" in suffix:
        assert reloaded.config.id2label == hf_model.config.id2label


def test_unsupported_configs_are_refused(tmp_path):
    from lmforge.convert.adapter import ConfigError
    from lmforge.convert.hf_config import from_hf_config

    base = hf_config("Model").to_dict()
    for bad in ({"attn_type": "uni"}, {"bi_data": True}, {"reuse_len": 8}, {"summary_type": "first"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            from_hf_config({**base, **bad})
    with pytest.raises(ConfigError, match="ForQuestionAnswering is not supported"):
        from_hf_config({**base, "architectures": ["XLNetForQuestionAnswering"]})
