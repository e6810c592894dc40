"""Parity with transformers: every family, every head HF has for it, on a padded batch.

A random-initialised transformers model is saved, converted with lmforge.convert, and both run
the same batch: every layer's hidden states, the head's logits and its loss must agree to 1e-5.
Then lmforge -> HF -> lmforge must be bit-exact, and the exported directory must load in
transformers (the matching AutoModelFor* class) with no missing or unexpected tensor.
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
B, T, C = 3, 7, 2  # batch, length, choices
LENGTHS = (7, 5, 3)  # right padding

PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra",
          "distilbert": "DistilBert", "openai-gpt": "OpenAIGPT", "gpt2": "GPT2"}
_ENCODER = ["Model", "ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
            "ForQuestionAnswering", "ForMultipleChoice"]
HEADS = {
    "bert": _ENCODER + ["ForPreTraining", "ForNextSentencePrediction"],
    "roberta": _ENCODER,
    "albert": _ENCODER + ["ForPreTraining"],
    "electra": _ENCODER + ["ForPreTraining"],
    "distilbert": _ENCODER,
    "openai-gpt": ["Model", "LMHeadModel", "ForSequenceClassification"],
    "gpt2": ["Model", "LMHeadModel", "ForSequenceClassification", "ForTokenClassification",
             "ForQuestionAnswering"],
}
CASES = [(family, suffix) for family, suffixes in HEADS.items() for suffix in suffixes]
# variants: a regression head (num_labels == 1) for one encoder and one decoder; DistilBERT's
# fixed sinusoidal positions; ALBERT with one group per layer (no sharing)
CASES += [("bert", "ForSequenceClassification:regression"), ("gpt2", "ForSequenceClassification:regression"),
          ("distilbert", "ForMaskedLM:sinusoidal"), ("albert", "ForPreTraining:groups2")]


def base_case(suffix: str) -> str:
    """The architecture suffix a variant behaves as in a batch (regression stays its own)."""
    return suffix if suffix.endswith(":regression") else suffix.split(":")[0]

AUTO = {"Model": "AutoModel", "ForPreTraining": "AutoModelForPreTraining", "ForMaskedLM": "AutoModelForMaskedLM",
        "ForNextSentencePrediction": "AutoModelForNextSentencePrediction",
        "ForSequenceClassification": "AutoModelForSequenceClassification",
        "ForTokenClassification": "AutoModelForTokenClassification",
        "ForQuestionAnswering": "AutoModelForQuestionAnswering",
        "ForMultipleChoice": "AutoModelForMultipleChoice", "LMHeadModel": "AutoModelForCausalLM"}


def hf_config(family: str, suffix: str):
    """Tiny config: hidden 32, 2 layers, 4 heads, intermediate 37, vocab 99; ALBERT/ELECTRA
    factorise the embeddings (16 wide) to exercise the projection."""
    regression = suffix.endswith(":regression")
    labels: dict = {}
    if regression:
        labels = {"num_labels": 1}
    elif suffix == "ForSequenceClassification":
        labels = {"id2label": {0: "neg", 1: "neu", 2: "pos"}}
    elif suffix == "ForTokenClassification":
        labels = {"id2label": {i: f"TAG{i}" for i in range(5)}}
    common = dict(vocab_size=99, **labels)
    if family in ("bert", "roberta", "albert", "electra"):
        kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=64)
        if family in ("albert", "electra"):
            kw["embedding_size"] = 16
        if family == "albert":
            # both layers share one group (ALBERT §3.1), or each has its own
            kw["num_hidden_groups"] = 2 if suffix.endswith(":groups2") else 1
        if family == "roberta":
            kw.update(pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
        config_cls = getattr(transformers, PREFIX[family] + "Config")
        return config_cls(**kw, **common)
    if family == "distilbert":
        return transformers.DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                             max_position_embeddings=64,
                                             sinusoidal_pos_embds=suffix.endswith(":sinusoidal"), **common)
    kw = dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, pad_token_id=0)
    if family == "gpt2":
        return transformers.GPT2Config(n_inner=37, bos_token_id=2, eos_token_id=2, **kw, **common)
    return transformers.OpenAIGPTConfig(**kw, **common)


def randomised(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "ln_" in name or "layer_norm" in name


def hf_checkpoint(checkpoints: CheckpointStore, family: str, suffix: str) -> tuple[torch.nn.Module, Path]:
    """A random HF model (eval, fp32) and the directory it was saved to; built once per case."""
    cls = getattr(transformers, PREFIX[family] + suffix.split(":")[0])
    return checkpoints.get(f"{family}-{suffix.replace(':', '-')}", lambda: random_hf_model(
        cls, hf_config(family, suffix), seed=1234, randomise=randomised))


def pad_id(family: str) -> int:
    return 1 if family == "roberta" else 0


def make_batch(family: str, suffix: str) -> tuple[dict, dict, dict, dict]:
    """(hf inputs, our inputs, hf labels, our labels) for one forward of both models."""
    suffix = base_case(suffix)
    g = torch.Generator().manual_seed(7)
    shape = (B, C, T) if suffix == "ForMultipleChoice" else (B, T)
    ids = torch.randint(3, 99, shape, generator=g)
    mask = torch.zeros(shape, dtype=torch.long)
    for b, length in enumerate(LENGTHS):
        mask[b, ..., :length] = 1
    ids[mask == 0] = pad_id(family)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if family in ("bert", "albert", "electra"):
        inputs["token_type_ids"] = torch.randint(0, 2, shape, generator=g) * mask
    hf_labels: dict = {}
    ours_labels: dict = {}
    token_labels = torch.randint(0, 5, shape, generator=g).masked_fill(mask == 0, IGNORE)
    if suffix in ("ForMaskedLM", "ForPreTraining") and family != "electra":
        mlm = ids.masked_fill(torch.rand(shape, generator=g) > 0.4, IGNORE).masked_fill(mask == 0, IGNORE)
        mlm[0, 0] = ids[0, 0]  # at least one masked position
        hf_labels["labels"], ours_labels["mlm_labels"] = mlm, mlm
    if suffix in ("ForPreTraining", "ForNextSentencePrediction") and family != "electra":
        pair = torch.tensor([0, 1, 1])
        key = {"albert": "sentence_order_label", "bert": "next_sentence_label"}[family]
        if suffix == "ForNextSentencePrediction":
            key = "labels"
        hf_labels[key], ours_labels["sop_labels" if family == "albert" else "nsp_labels"] = pair, pair
    if suffix == "ForPreTraining" and family == "electra":
        replaced = torch.randint(0, 2, shape, generator=g)
        hf_labels["labels"] = replaced  # HF ignores padding through the attention mask
        ours_labels["rtd_labels"] = replaced.masked_fill(mask == 0, IGNORE)
    if suffix == "ForSequenceClassification":
        hf_labels["labels"] = ours_labels["labels"] = torch.tensor([0, 2, 1])
    if suffix.endswith(":regression"):
        hf_labels["labels"] = ours_labels["labels"] = torch.tensor([0.5, -1.0, 2.0])
    if suffix == "ForMultipleChoice":
        hf_labels["labels"] = ours_labels["labels"] = torch.tensor([1, 0, 1])
    if suffix == "ForTokenClassification":
        hf_labels["labels"] = ours_labels["labels"] = token_labels
    if suffix == "ForQuestionAnswering":
        start, end = torch.tensor([1, 0, 2]), torch.tensor([3, 4, 2])
        hf_labels.update(start_positions=start, end_positions=end)
        ours_labels.update(start_positions=start, end_positions=end)
    if suffix == "LMHeadModel":
        lm = ids.masked_fill(mask == 0, IGNORE)
        hf_labels["labels"], ours_labels["lm_labels"] = lm, lm
    return inputs, dict(inputs), hf_labels, ours_labels


def head_logits(suffix: str, hf_out, ours_out) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Pairs of (what, HF tensor, our tensor) for the head outputs of one architecture."""
    suffix = base_case(suffix)
    h = ours_out.heads
    if suffix == "Model":
        pairs = [("last_hidden_state", hf_out.last_hidden_state, ours_out.backbone.last_hidden_state)]
        if getattr(hf_out, "pooler_output", None) is not None:
            pairs.append(("pooler", hf_out.pooler_output, ours_out.backbone.pooled))
        return pairs
    if suffix == "ForPreTraining":
        if "rtd" in h:
            return [("rtd", hf_out.logits, h["rtd"].logits)]
        pair = "sop" if "sop" in h else "nsp"
        second = hf_out.sop_logits if pair == "sop" else hf_out.seq_relationship_logits
        return [("mlm", hf_out.prediction_logits, h["mlm"].logits), (pair, second, h[pair].logits)]
    if suffix == "ForQuestionAnswering":
        logits = h["qa"].logits
        return [("start", hf_out.start_logits, logits[..., 0]), ("end", hf_out.end_logits, logits[..., 1])]
    (head,) = h.values()
    return [("logits", hf_out.logits, head.logits)]


@pytest.mark.parametrize("family,suffix", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_hf_to_lmforge_parity(family, suffix, hf_checkpoints):
    hf_model, directory = hf_checkpoint(hf_checkpoints, family, suffix)
    ours = load_hf(directory).eval()
    assert ours.config.sinusoidal_positions == suffix.endswith(":sinusoidal")
    if family == "albert":
        assert len(ours.backbone.layers) == (2 if suffix.endswith(":groups2") else 1)
    hf_in, ours_in, hf_labels, ours_labels = make_batch(family, suffix)
    with torch.no_grad():
        hf_out = hf_model(**hf_in, output_hidden_states=True)
        ours_out = ours(**ours_in, output_hidden_states=True)
    hf_states, our_states = hf_out.hidden_states, ours_out.backbone.hidden_states
    assert len(hf_states) == len(our_states) == 3  # embeddings + 2 layers
    # every position, padding included: a right-padding query attends to the real keys before
    # it in both libraries, and HF's QA loss reads those positions
    for layer, (a, b) in enumerate(zip(hf_states, our_states)):
        torch.testing.assert_close(b, a, **TOL, msg=lambda m, layer=layer: f"hidden state {layer}: {m}")
    for what, a, b in head_logits(suffix, hf_out, ours_out):
        torch.testing.assert_close(b, a, **TOL, msg=lambda m, what=what: f"{what}: {m}")
    if hf_labels:
        with torch.no_grad():
            hf_loss = hf_model(**hf_in, **hf_labels).loss
            ours_loss = ours(**ours_in, **ours_labels).loss
        assert hf_loss is not None and ours_loss is not None
        torch.testing.assert_close(ours_loss, hf_loss, **TOL)


@pytest.mark.parametrize("family,suffix", CASES, ids=[f"{f}-{s}" for f, s in CASES])
def test_lmforge_to_hf_round_trip(family, suffix, tmp_path, hf_checkpoints):
    hf_model, directory = hf_checkpoint(hf_checkpoints, family, suffix)
    ours = load_hf(directory).eval()
    assert_round_trip(ours, tmp_path / "hf")  # ours -> HF -> ours is bit-exact

    # and transformers loads the export as the same class, with nothing missing or unexpected
    auto = getattr(transformers, AUTO[suffix.split(":")[0]])
    reloaded = assert_loads_in_transformers(auto, tmp_path / "hf", hf_model).eval()
    assert type(reloaded) is type(hf_model)
    hf_in, _, _, _ = make_batch(family, suffix)
    with torch.no_grad():
        a = hf_model(**hf_in, output_hidden_states=True)
        b = reloaded(**hf_in, output_hidden_states=True)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(y, x, **TOL)
    if reloaded.config.num_labels and "Classification" in suffix:
        assert reloaded.config.id2label == hf_model.config.id2label
