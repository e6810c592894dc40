"""The key-map engine on small synthetic state dicts: named layer ranges, transforms both ways,
optional tensors, one-layer rules, aliases and tied tensors, and the named errors.

No transformers here: the HF side is a dict of tensors laid out the way an HF family would.
"""

from __future__ import annotations

import pytest
import torch

from lmforge.config import ALL_FAMILIES, PRESET_CLASSES
from lmforge.convert import ADAPTERS
from lmforge.convert.families import adapter_of
from lmforge.convert.mapping import ConversionError, compile_map, hf_to_ours, ours_to_hf
from lmforge.convert.rules import KeyMap, Rule, drop, fused, params, rename
from lmforge.convert.transforms import TRANSPOSE, Fuse, SplitHeads

D, N, HD = 8, 2, 4  # model width, heads, head size (N * HD == D)
RANGES = {"enc": 2, "dec": 3}


def seq2seq_map(bias: bool | str = True) -> KeyMap:
    """An encoder-decoder: two stacks with their own counts, a fused qkv, a Conv1D-style transposed
    weight, XLNet-style (d, n, h) projections, and a relative bias that only layer 0 of the encoder has."""
    enc, dec = "backbone.encoder.layers.{enc}", "backbone.decoder.layers.{dec}"
    return KeyMap(
        backbone=(
            rename("shared.weight", "backbone.tok.weight")
            + fused(f"{enc}.attn.qkv", tuple(f"encoder.block.{{enc}}.{n}" for n in "qkv"), bias=bias)
            + rename("encoder.block.{enc}.rel_bias.weight", "backbone.encoder.rel_bias.weight", at={"enc": 0})
            + params("encoder.block.{enc}.fc", f"{enc}.fc", weight=TRANSPOSE, bias=bias)
            + rename("decoder.block.{dec}.q", f"{dec}.attn.q.weight", SplitHeads(N, transpose=True))
            + rename("decoder.block.{dec}.o", f"{dec}.attn.o.weight", SplitHeads(N))
            + rename("decoder.block.{dec}.r_w_bias", f"{dec}.attn.r_w_bias", SplitHeads(N))
            + drop("decoder.block.{dec}.mask")
        ),
        heads={"lm": rename("lm_head.weight", "heads.{head}.decoder.weight")
               + rename("final_logits_bias", "heads.{head}.bias") + rename("lm_head.bias", "heads.{head}.bias"),
               "cls": params("classifier", "heads.{head}.out")},
    )


def hf_state(bias: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    state = {"shared.weight": r(11, D), "encoder.block.0.rel_bias.weight": r(32, N)}
    for i in range(RANGES["enc"]):
        for n in "qkv":
            state[f"encoder.block.{i}.{n}.weight"] = r(D, D)
            if bias:
                state[f"encoder.block.{i}.{n}.bias"] = r(D)
        state[f"encoder.block.{i}.fc.weight"] = r(D, 3 * D)  # (in, out)
        if bias:
            state[f"encoder.block.{i}.fc.bias"] = r(3 * D)
    for i in range(RANGES["dec"]):
        state[f"decoder.block.{i}.q"] = r(D, N, HD)
        state[f"decoder.block.{i}.o"] = r(D, N, HD)
        state[f"decoder.block.{i}.r_w_bias"] = r(N, HD)
    return state


def our_shapes(bias: bool = True) -> dict[str, torch.Size]:
    shapes = {"backbone.tok.weight": (11, D), "backbone.encoder.rel_bias.weight": (32, N)}
    for i in range(RANGES["enc"]):
        shapes[f"backbone.encoder.layers.{i}.attn.qkv.weight"] = (3 * D, D)
        shapes[f"backbone.encoder.layers.{i}.fc.weight"] = (3 * D, D)
        if bias:
            shapes[f"backbone.encoder.layers.{i}.attn.qkv.bias"] = (3 * D,)
            shapes[f"backbone.encoder.layers.{i}.fc.bias"] = (3 * D,)
    for i in range(RANGES["dec"]):
        shapes[f"backbone.decoder.layers.{i}.attn.q.weight"] = (N * HD, D)
        shapes[f"backbone.decoder.layers.{i}.attn.o.weight"] = (D, N * HD)
        shapes[f"backbone.decoder.layers.{i}.attn.r_w_bias"] = (N * HD,)
    return {k: torch.Size(v) for k, v in shapes.items()}


def load(state, bias: bool | str = True, expected=None, heads=None, tied=None):
    expected = expected if expected is not None else our_shapes(bias is True)
    cmap = compile_map(seq2seq_map(bias), RANGES, heads or {}, expected)
    return hf_to_ours(state, cmap, expected, tied or {}, "hf.safetensors"), cmap


def test_two_ranges_and_transforms_round_trip_exactly():
    state = hf_state()
    (ours, dropped), cmap = load(state)
    assert set(ours) == set(our_shapes()) and not dropped
    assert "backbone.decoder.layers.2.attn.q.weight" in ours  # dec has its own count (3)
    assert "backbone.encoder.layers.2.attn.qkv.weight" not in ours  # enc has 2
    assert torch.equal(ours["backbone.encoder.layers.1.attn.qkv.weight"][D:2 * D], state["encoder.block.1.k.weight"])
    assert torch.equal(ours["backbone.encoder.layers.0.fc.weight"], state["encoder.block.0.fc.weight"].t())
    back = ours_to_hf(ours, cmap, "model")
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_split_heads_matches_xlnet_einsums():
    """XLNet projects with einsum("ibh,hnd->ibnd", x, q) and einsum("ibnd,hnd->ibh", v, o):
    the converted tensors are the weights of the equivalent Linears."""
    state = hf_state()
    (ours, _), _ = load(state)
    x = torch.randn(5, 1, D)
    q, o = state["decoder.block.0.q"], state["decoder.block.0.o"]
    heads = torch.einsum("ibh,hnd->ibnd", x, q)
    torch.testing.assert_close(x @ ours["backbone.decoder.layers.0.attn.q.weight"].t(), heads.flatten(-2))
    torch.testing.assert_close(heads.flatten(-2) @ ours["backbone.decoder.layers.0.attn.o.weight"].t(),
                               torch.einsum("ibnd,hnd->ibh", heads, o))
    assert torch.equal(ours["backbone.decoder.layers.0.attn.r_w_bias"], state["decoder.block.0.r_w_bias"].flatten())
    split = SplitHeads(N, transpose=True)
    assert torch.equal(split.to_hf(split.to_ours([q]), 1)[0], q)
    with pytest.raises(ValueError, match=r"does not end in \(3 heads"):
        SplitHeads(3).to_ours([q])


def test_optional_bias_covers_models_with_and_without_biases():
    (with_bias, _), _ = load(hf_state(bias=True), bias="optional", expected=our_shapes(bias=True))
    (without, _), cmap = load(hf_state(bias=False), bias="optional", expected=our_shapes(bias=False))
    assert "backbone.encoder.layers.0.fc.bias" in with_bias and "backbone.encoder.layers.0.fc.bias" not in without
    assert set(ours_to_hf(without, cmap, "model")) == set(hf_state(bias=False))
    # a bias in the checkpoint that the model does not have is named
    with pytest.raises(ConversionError, match=r"encoder\.block\.0\.fc\.bias maps to "
                                              r"backbone\.encoder\.layers\.0\.fc\.bias, which this model does not"):
        load(hf_state(bias=True), bias="optional", expected=our_shapes(bias=False))


def test_a_required_rule_the_model_lacks_is_an_error():
    with pytest.raises(ConversionError, match=r"key map expects tensors this model does not have: "
                                              r"\['backbone\.encoder\.layers\.0\.attn\.qkv\.bias'"):
        compile_map(seq2seq_map(bias=True), RANGES, {}, our_shapes(bias=False))


def test_layer_zero_only_rule():
    cmap = compile_map(seq2seq_map(), RANGES, {})
    rel = [e.hf for e in cmap.entries if e.ours == "backbone.encoder.rel_bias.weight"]
    assert rel == [("encoder.block.0.rel_bias.weight",)]
    state = hf_state()
    state["encoder.block.1.rel_bias.weight"] = torch.zeros(32, N)  # layer 1 has none in this family
    with pytest.raises(ConversionError, match=r"unexpected tensors.*encoder\.block\.1\.rel_bias\.weight"):
        load(state)
    last = Rule(("block.{enc}.x",), "x", at={"enc": -1})
    assert [e.hf for e in compile_map(KeyMap(backbone=(last,)), RANGES, {}).entries] == [("block.1.x",)]
    in_layer = Rule(("block.{enc}.rel",), "layers.{enc}.rel", at={"enc": 0})  # ours may keep the index
    assert [e.ours for e in compile_map(KeyMap(backbone=(in_layer,)), RANGES, {}).entries] == ["layers.0.rel"]
    beyond = Rule(("block.{enc}.x",), "x", at={"enc": 5})
    assert compile_map(KeyMap(backbone=(beyond,)), RANGES, {}).entries == []


def test_missing_misshapen_and_partial_fuse_are_named():
    state = hf_state()
    del state["decoder.block.2.o"]
    with pytest.raises(ConversionError,
                       match=r"missing tensor decoder\.block\.2\.o \(for backbone\.decoder\.layers\.2\.attn\.o\."):
        load(state)
    state = hf_state()
    del state["encoder.block.0.v.bias"]
    with pytest.raises(ConversionError, match=r"needs \[.*\]; missing \['encoder\.block\.0\.v\.bias'\]"):
        load(state)
    state = hf_state()
    state["encoder.block.0.k.weight"] = torch.zeros(D, D + 1)
    with pytest.raises(ConversionError, match=r"encoder\.block\.0\.q\.weight \+ .*different shapes"):
        load(state)
    state = hf_state()
    state["decoder.block.1.r_w_bias"] = torch.zeros(N, HD + 1)
    with pytest.raises(ConversionError, match=r"decoder\.block\.1\.r_w_bias: shape \(10,\) does not fit"):
        load(state)


def test_dropped_buffers_aliases_tied_and_unused_heads():
    state = hf_state()
    state["decoder.block.0.mask"] = torch.ones(3)  # dropped on purpose
    state["lm_head.weight"] = state["shared.weight"].clone()  # tied copy
    state["final_logits_bias"] = bias = torch.randn(11)
    state["lm_head.bias"] = bias.clone()  # alias of the same tensor
    state["classifier.weight"] = torch.zeros(2, D)  # a head this architecture does not use
    expected = {**our_shapes(), "heads.lm.decoder.weight": torch.Size((11, D)), "heads.lm.bias": torch.Size((11,))}
    tied = {"heads.lm.decoder.weight": "backbone.tok.weight"}
    (ours, dropped), cmap = load(state, expected=expected, heads={"lm": "lm"}, tied=tied)
    assert dropped == ["classifier.weight"] and torch.equal(ours["heads.lm.bias"], bias)
    assert "heads.lm.decoder.weight" not in ours
    back = ours_to_hf(ours, cmap, "model")
    assert "final_logits_bias" in back and "lm_head.bias" not in back  # the first alias is written
    assert cmap.backbone_names() >= {"shared.weight", "encoder.block.0.q.weight"}
    assert "lm_head.weight" not in cmap.backbone_names()

    only_decoder = {k: v for k, v in state.items() if k != "shared.weight"}  # tied pair under one name
    (ours, _), _ = load(only_decoder, expected=expected, heads={"lm": "lm"}, tied=tied)
    assert torch.equal(ours["backbone.tok.weight"], state["lm_head.weight"])

    state["lm_head.bias"] = bias + 1
    with pytest.raises(ConversionError, match=r"lm_head\.bias and final_logits_bias should be the same tensor"):
        load(state, expected=expected, heads={"lm": "lm"}, tied=tied)
    with pytest.raises(ConversionError, match=r"head 'x' of kind 'nsp' has no HF counterpart"):
        compile_map(seq2seq_map(), RANGES, {"x": "nsp"})


def test_export_errors_name_the_tensor():
    (ours, _), cmap = load(hf_state())
    with pytest.raises(ConversionError, match=r"no HF name for tensors \['backbone\.extra'\]"):
        ours_to_hf({**ours, "backbone.extra": torch.zeros(1)}, cmap, "model")
    ours["backbone.encoder.layers.0.attn.qkv.weight"] = torch.zeros(3 * D + 1, D)
    with pytest.raises(ConversionError, match=r"attn\.qkv\.weight: shape \(25, 8\) does not split into 3"):
        ours_to_hf(ours, cmap, "model")


@pytest.mark.parametrize("make,message", [
    (lambda: Rule(("a.{enc}",), "b"), "same free layer ranges"),
    (lambda: Rule(("a.{enc}",), "b.{enc}.{dec}"), "same free layer ranges"),
    (lambda: Rule(("a.{enc}", "b.{dec}"), "c.{enc}", Fuse()), "same layer ranges"),
    (lambda: Rule(("a",), "b", Fuse()), "takes several"),
    (lambda: Rule(("a", "b"), "c"), "takes one"),
    (lambda: Rule(("a.{enc}",), "b", at={"dec": 0}), "`at` names ranges"),
    (lambda: Rule(("a.{head}",), "b.{head}"), "no {head}"),
])
def test_malformed_rules_fail_at_definition(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_range_is_named():
    with pytest.raises(ConversionError, match=r"names layer ranges \['layer'\]; this model has \['dec', 'enc'\]"):
        compile_map(KeyMap(backbone=rename("h.{layer}.w", "l.{layer}.w")), RANGES, {})


def test_every_family_has_a_consistent_adapter():
    """Each lmforge family exports through one adapter; every head kind an architecture carries
    has rules, and every head style names a kind the family has."""
    assert sorted(a.family for a in ADAPTERS.values()) == sorted(ALL_FAMILIES)
    for family in ALL_FAMILIES:
        adapter = adapter_of(family)
        config = PRESET_CLASSES[adapter.preset].from_name(adapter.preset)
        rules = adapter.key_map(config)
        kinds = {k for arch_kinds in adapter.architectures.values() for k in arch_kinds}
        assert kinds <= set(rules.heads), family
        assert set(adapter.head_styles) <= kinds, family
        assert set(adapter.architectures).isdisjoint(adapter.unsupported), family
