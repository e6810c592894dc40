"""The model core on its own: presets, masks, sharing, heads' losses, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from lmforge.config import PRESETS, CheckpointConfig, ModelConfig
from lmforge.heads import IGNORE
from lmforge.models import TaskModel, load_model, save_model
from lmforge.nn.masks import attention_mask_for_sdpa

TINY = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=37, vocab_size=99,
            max_position_embeddings=64)


def tiny(name: str, **kw) -> ModelConfig:
    extra = {"embedding_size": 16} if name.startswith(("albert", "electra")) else {}
    return ModelConfig.from_name(name, **{**TINY, **extra, **kw})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_serialize(name):
    config = ModelConfig.from_name(name)
    assert ModelConfig.from_dict(config.to_dict()) == config
    # an explicit head size (T5 v1.1-small: 6 heads of 64 on d_model 512) need not divide hidden_size
    assert config.attention_head_size or config.hidden_size % config.num_heads == 0


def test_official_sizes():
    base = ModelConfig.from_name("bert-base-uncased")
    model = TaskModel(base.replace(num_layers=1), init=False)
    per_layer = sum(p.numel() for p in model.backbone.layers[0].parameters())
    assert per_layer == 7_087_872  # 4*768*768 + 2*768*3072 + biases + 2 LayerNorms
    assert ModelConfig.from_name("albert-base-v2").num_layer_groups == 1
    assert ModelConfig.from_name("roberta-base").position_offset == 2


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="family"):
        ModelConfig(family="t9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"hidden": 3})


def test_causal_mask_with_left_padding_stays_finite():
    pad = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    mask, is_causal = attention_mask_for_sdpa(pad, causal=True, seq_len=4)
    assert not is_causal and mask.shape == (2, 1, 4, 4)
    # real query 3 of row 0 sees real keys 2 and 3 only
    assert mask[0, 0, 3].tolist() == [False, False, True, True]
    assert attention_mask_for_sdpa(torch.ones(2, 4), causal=True, seq_len=4) == (None, True)


def test_padding_does_not_change_real_tokens():
    for name in ("bert-base-uncased", "gpt2"):
        model = TaskModel(tiny(name)).eval()
        ids = torch.randint(5, 99, (1, 6))
        padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
        mask = torch.tensor([[1] * 6 + [0] * 3])
        alone = model(ids).backbone.last_hidden_state
        with_pad = model(padded, mask).backbone.last_hidden_state[:, :6]
        torch.testing.assert_close(alone, with_pad, atol=1e-5, rtol=1e-5)


def test_causal_model_ignores_future_tokens():
    model = TaskModel(tiny("gpt2")).eval()
    ids = torch.randint(0, 99, (1, 8))
    changed = ids.clone()
    changed[0, 5:] = (changed[0, 5:] + 1) % 99
    a = model(ids).backbone.last_hidden_state[:, :5]
    b = model(changed).backbone.last_hidden_state[:, :5]
    torch.testing.assert_close(a, b)


def test_albert_shares_one_block_across_layers():
    config = tiny("albert-base-v2", num_layers=4)
    model = TaskModel(config)
    assert len(model.backbone.layers) == 1
    assert all(model.backbone.layer_for(i) is model.backbone.layers[0] for i in range(4))
    assert model.backbone.embeddings.proj is not None  # factorized: 16 -> 32


def test_gpt2_scaled_residual_init():
    config = tiny("gpt2", num_layers=8, hidden_size=256, num_heads=4, intermediate_size=1024)
    model = TaskModel(config)
    out_std = model.backbone.layers[0].attn.out.weight.std().item()
    in_std = model.backbone.layers[0].attn.qkv.weight.std().item()
    assert abs(in_std - 0.02) < 0.002
    assert abs(out_std - 0.02 / math.sqrt(16)) < 0.001


def test_mlm_loss_on_masked_positions_equals_full_loss():
    model = TaskModel(tiny("bert-base-uncased"), {"mlm": {"kind": "mlm"}}).eval()
    ids = torch.randint(5, 99, (3, 10))
    labels = torch.full_like(ids, IGNORE)
    labels[:, [2, 7]] = ids[:, [2, 7]]
    sparse = model(ids, mlm_labels=labels).loss
    full_logits = model(ids).heads["mlm"].logits  # (B, T, V)
    full = F.cross_entropy(full_logits.reshape(-1, 99), labels.reshape(-1), ignore_index=IGNORE)
    torch.testing.assert_close(sparse, full)
    assert model.heads["mlm"].decoder.weight is model.backbone.embeddings.tok.weight


def test_multiple_choice_and_span_and_tagging_shapes():
    config = tiny("bert-base-uncased")
    model = TaskModel(config, {"mc": {"kind": "multiple_choice", "label_key": "mc_labels"},
                               "qa": {"kind": "qa"},
                               "ner": {"kind": "token_classification", "num_labels": 5,
                                       "label_key": "ner_labels"}})
    ids = torch.randint(5, 99, (2, 4, 9))  # (B, C, T)
    out = model(ids, mc_labels=torch.tensor([1, 3]))
    assert out.heads["mc"].logits.shape == (2, 4)
    assert out.heads["qa"].logits.shape == (8, 9, 2)
    assert out.heads["ner"].logits.shape == (8, 9, 5)
    assert out.loss is not None and out.loss.requires_grad


def test_save_load_roundtrip_is_exact(tmp_path):
    model = TaskModel(tiny("roberta-base"), {"mlm": {"kind": "mlm"},
                                             "cls": {"kind": "classification", "label_names": ["a", "b", "c"]}})
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.head_specs() == model.head_specs()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert loaded.heads["mlm"].decoder.weight is loaded.backbone.embeddings.tok.weight
    assert CheckpointConfig.load(tmp_path).heads["cls"]["label_names"] == ["a", "b", "c"]


def test_load_new_head_on_pretrained_backbone(tmp_path):
    model = TaskModel(tiny("bert-base-uncased"), {"mlm": {"kind": "mlm"}})
    save_model(model, tmp_path)
    tuned = load_model(tmp_path, heads={"cls": {"kind": "classification", "num_labels": 2}})
    assert set(tuned.heads) == {"cls"}
    assert torch.equal(tuned.backbone.embeddings.tok.weight, model.backbone.embeddings.tok.weight)


def test_load_names_missing_and_misshaped_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    model = TaskModel(tiny("bert-base-uncased"))
    save_model(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state.pop("backbone.layers.1.mlp.fc_in.bias")
    state["backbone.layers.0.norm1.weight"] = torch.ones(7)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.fc_in\.bias.*layers\.0\.norm1\.weight"):
        load_model(tmp_path)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_matches_reference_loss_and_gradients(bias, monkeypatch):
    import lmforge.nn.cross_entropy as ce

    monkeypatch.setattr(ce, "CHUNK_ELEMENTS", 7 * 50)  # several chunks, the last one partial
    hidden = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(0, 50, (23,))
    params = [hidden, weight] + ([b] if bias else [])

    reference = F.cross_entropy(F.linear(hidden, weight, b), targets)
    expected = torch.autograd.grad(3.0 * reference, params)
    loss, predictions = ce.linear_cross_entropy(hidden, weight, b, targets)
    got = torch.autograd.grad(3.0 * loss, params)
    torch.testing.assert_close(loss, reference.float(), rtol=1e-6, atol=1e-6)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    assert torch.equal(predictions, F.linear(hidden, weight, b).argmax(-1))


def test_linear_cross_entropy_is_exact_where_the_target_probability_underflows():
    """The loss comes from the row max and p_max (never below 1/V), not from log p_target: with logits
    spread so far that p_target is 0 in fp32 the loss is still finite and equals float64's."""
    from lmforge.nn.cross_entropy import linear_cross_entropy, softmax_

    hidden = torch.randn(9, 16) * 40.0  # logits of std ~160: targets 300+ nats below the max
    weight = torch.randn(50, 16)
    logits = F.linear(hidden, weight)
    targets = logits.argmin(-1)
    assert (torch.softmax(logits, -1).gather(1, targets[:, None]) == 0).all()
    loss, _ = linear_cross_entropy(hidden, weight, None, targets)
    reference = F.cross_entropy(logits.double(), targets)
    torch.testing.assert_close(loss.double(), reference, rtol=1e-6, atol=0)
    chunk = torch.randn(7, 50) * 30
    expected = torch.softmax(chunk, -1)
    assert torch.equal(softmax_(chunk), expected)  # in place, the same values as torch.softmax


def test_linear_cross_entropy_keeps_subnormals_out_of_a_badly_scaled_softmax(monkeypatch):
    """T5's untied N(0, 1) output layer at initialisation: logits of std ~16, so a few percent of the
    probabilities underflow into fp32 subnormals (x86 runs the gradient matmuls on them ~11x slower).
    The probabilities the chunk loop computes hold none, and the loss and gradients still equal float64's."""
    import lmforge.nn.cross_entropy as ce

    tiny_normal = torch.finfo(torch.float32).tiny
    chunks = []
    monkeypatch.setattr(ce, "softmax_", lambda x: chunks.append(ce.torch.softmax(x, -1)) or x.copy_(chunks[-1]))
    hidden = torch.randn(40, 256)
    hidden = (hidden / hidden.pow(2).mean(-1, keepdim=True).sqrt()).requires_grad_()  # RMS-normed, as T5's
    weight = torch.randn(2000, 256, requires_grad=True)
    targets = torch.randint(0, 2000, (40,))
    probs = torch.softmax(F.linear(hidden, weight), -1)
    assert ((probs > 0) & (probs < tiny_normal)).float().mean() > 0.01  # the case: plain softmax underflows
    loss, _ = ce.linear_cross_entropy(hidden, weight, None, targets)
    assert chunks and not any(((p > 0) & (p < tiny_normal)).any() for p in chunks)
    reference = F.cross_entropy(F.linear(hidden.double(), weight.double()), targets)
    plain = F.cross_entropy(F.linear(hidden, weight), targets)  # fp32 autograd, subnormals and all
    got = torch.autograd.grad(loss, (hidden, weight))
    expected = torch.autograd.grad(reference, (hidden, weight))
    fp32 = torch.autograd.grad(plain, (hidden, weight))
    torch.testing.assert_close(loss.double(), reference, rtol=1e-6, atol=0)
    for g, e, f in zip(got, expected, fp32):  # as close to float64 as fp32 autograd is
        assert (g.double() - e).abs().max() <= 2 * (f.double() - e).abs().max()


@pytest.mark.parametrize("bias", [False, True])
def test_linear_cross_entropy_under_bf16_autocast_matches_autocast_reference(bias, monkeypatch):
    """In bf16 the logits and both gradient matmuls run in bf16 (as autocast's own Linear would), the
    softmax in fp32: the loss and gradients equal the autocast reference within bf16 rounding."""
    import lmforge.nn.cross_entropy as ce

    monkeypatch.setattr(ce, "CHUNK_ELEMENTS", 7 * 50)
    hidden = torch.randn(23, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    b = torch.randn(50, requires_grad=True) if bias else None
    targets = torch.randint(0, 50, (23,))
    params = [hidden, weight] + ([b] if bias else [])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = F.cross_entropy(F.linear(hidden, weight, b).float(), targets)
        loss, _ = ce.linear_cross_entropy(hidden, weight, b, targets)
    expected = torch.autograd.grad(reference, params)
    got = torch.autograd.grad(loss, params)
    torch.testing.assert_close(loss, reference, rtol=1e-2, atol=1e-2)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype  # fp32 master gradients
        torch.testing.assert_close(g, e, rtol=2e-2, atol=2e-2)


def test_linear_cross_entropy_bf16_hidden_gradient_has_no_scale_bias():
    """The 1/N of the mean is applied to bf16 hidden gradients as an fp32 factor: rounded to bf16 first,
    1/232 would shrink every gradient by 0.17% (the fit below read 0.99868 that way)."""
    import lmforge.nn.cross_entropy as ce

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(232, 256, generator=gen).bfloat16().requires_grad_()
    weight = (torch.randn(500, 256, generator=gen) * 0.05).requires_grad_()
    targets = torch.randint(0, 500, (232,), generator=gen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = ce.linear_cross_entropy(hidden, weight, None, targets)
    (got,) = torch.autograd.grad(loss, hidden)
    reference = F.cross_entropy(F.linear(hidden.double(), weight.bfloat16().double()), targets)
    (expected,) = torch.autograd.grad(reference, hidden)
    scale = (got.double() * expected.double()).sum() / expected.double().pow(2).sum()  # least-squares fit
    assert abs(scale.item() - 1.0) < 1e-3


def test_fused_and_plain_lm_heads_agree():
    config = tiny("gpt2")
    fused = TaskModel(config, {"lm": {"kind": "clm"}}).eval()  # no dropout: both see the same net
    plain = TaskModel(config, {"lm": {"kind": "clm", "fused_loss": False}}).eval()
    plain.load_state_dict(fused.state_dict())
    ids = torch.randint(0, 99, (3, 12))
    labels = ids.masked_fill(torch.arange(12) >= 10, IGNORE)
    a, b = fused(ids, lm_labels=labels), plain(ids, lm_labels=labels)
    assert a.heads["lm"].logits is None and b.heads["lm"].logits.shape == (3 * 9, 99)
    torch.testing.assert_close(a.loss, b.loss)
    assert torch.equal(a.heads["lm"].predictions, b.heads["lm"].predictions)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_linear_cross_entropy_without_rows_gives_zero_loss_and_gradients():
    from lmforge.nn.cross_entropy import linear_cross_entropy

    hidden = torch.randn(0, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    loss, predictions = linear_cross_entropy(hidden, weight, None, torch.zeros(0, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and predictions.numel() == 0
    assert torch.equal(weight.grad, torch.zeros_like(weight))
