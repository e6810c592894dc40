"""T5 (Raffel et al. 2020) as lmforge builds it: presets, the relative position bias (§2.1), the init, and
parity with transformers' T5Model / T5ForConditionalGeneration / T5EncoderModel, v1.0 and v1.1 layouts,
both ways, with padding; greedy and beam `generate` equal transformers'."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.models.task_model import TaskModel, load_model, save_model
from lmforge.nn.relative_position import RelativePositionBias, relative_position_bucket

TINY = dict(vocab_size=61, hidden_size=32, num_layers=2, num_decoder_layers=3, num_heads=4, attention_head_size=6,
            intermediate_size=37, relative_attention_buckets=8, relative_attention_max_distance=20)


def tiny(preset: str = "t5-small", **overrides) -> TaskModel:
    torch.manual_seed(0)
    config = ModelConfig.from_name(preset, **{**TINY, "dropout": 0.0, "attention_dropout": 0.0, "ffn_dropout": 0.0,
                                              **overrides})
    return TaskModel(config, {"lm": {"kind": "seq2seq_lm"}}).eval()


# ----------------------------------------------------------------------------------- presets
def test_presets_follow_the_paper_and_the_released_configs():
    small, base = ModelConfig.from_name("t5-small"), ModelConfig.from_name("t5-base")
    assert (small.num_layers, small.num_decoder_layers, small.hidden_size, small.intermediate_size,
            small.num_heads) == (6, 6, 512, 2048, 8)
    assert (base.num_layers, base.hidden_size, base.intermediate_size, base.num_heads) == (12, 768, 3072, 12)
    for c in (small, base):
        assert c.activation == "relu" and not c.gated_ffn and c.tie_word_embeddings and c.output_scale
    v11 = ModelConfig.from_name("t5-v1_1-small")
    assert (v11.num_layers, v11.hidden_size, v11.num_heads, v11.head_dim, v11.intermediate_size) == (8, 512, 6, 64, 1024)
    assert v11.gated_ffn and v11.activation == "gelu_tanh" and not v11.tie_word_embeddings and not v11.output_scale
    for name in ("t5-small", "t5-v1_1-base", "t5-mini"):
        c = ModelConfig.from_name(name)
        assert c.norm == "rms" and not c.bias and c.attention_scale == 1.0 and not c.absolute_positions
        assert (c.relative_attention_buckets, c.relative_attention_max_distance) == (32, 128)
        assert c.norm_position == "pre" and c.arch == "encoder-decoder"


def test_no_biases_no_position_table_one_relative_table_per_stack():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith(".bias") or n == "heads.lm.bias" for n in names), names
    assert not any(".pos." in n for n in names)
    tables = [n for n in names if "relative_bias" in n]
    assert tables == ["backbone.encoder.relative_bias.weight", "backbone.decoder.relative_bias.weight"]
    assert model.backbone.encoder.relative_bias.bidirectional and not model.backbone.decoder.relative_bias.bidirectional
    assert model.backbone.decoder.layers[0].cross_attn is not None
    # dropout after each stack's final norm, as T5's reference code (and HF's T5Stack) applies it
    assert model.backbone.encoder.drop_f is not None and model.backbone.decoder.drop_f is not None


# ----------------------------------------------------------------------------------- relative position bias
def test_buckets_exact_then_logarithmic_bidirectional():
    """§2.1 with 32 buckets, max distance 128: bidirectional halves of 16; distances 0..7 exact, then 8
    log-spaced buckets up to 128, beyond which everything shares the last bucket of its half."""
    d = torch.arange(-300, 301)
    b = relative_position_bucket(d, True, 32, 128)
    assert b.min() >= 0 and b.max() == 31
    for k in range(8):
        assert b[d == -k].item() == k  # keys before the query (or at it): lower half
        if k:
            assert b[d == k].item() == 16 + k  # keys after the query: upper half
    assert b[d == -128].item() == b[d == -300].item() == 15 and b[d == 300].item() == 31
    left = b[(d <= 0)].flip(0)  # distance 0, -1, -2, ...: non-decreasing buckets
    assert bool((left[1:] >= left[:-1]).all())
    # the log spacing: distance n (8 <= n < 128) is in bucket 8 + floor(log(n/8) / log(16) * 8)
    for n in (8, 11, 16, 23, 64, 100, 127):
        assert b[d == -n].item() == 8 + int(math.log(n / 8) / math.log(128 / 8) * 8)


def test_buckets_causal_looks_back_only():
    d = torch.arange(-300, 301)
    b = relative_position_bucket(d, False, 32, 128)
    assert bool((b[d >= 0] == 0).all())  # the future (masked anyway) and the query itself: bucket 0
    for k in range(16):
        assert b[d == -k].item() == k
    assert b[d == -300].item() == 31 and b.max() == 31


def test_bias_under_a_cache_is_the_last_rows_of_the_full_bias():
    bias = RelativePositionBias(8, 20, 3, bidirectional=False)
    torch.nn.init.normal_(bias.weight)
    full = bias(9, 9, torch.device("cpu"))  # (1, 3, 9, 9)
    assert full.shape == (1, 3, 9, 9)
    torch.testing.assert_close(bias(1, 9, torch.device("cpu")), full[:, :, 8:])
    torch.testing.assert_close(bias(3, 9, torch.device("cpu")), full[:, :, 6:])


def test_cached_decoding_equals_the_full_forward():
    """The relative bias is applied under the KV cache: step-by-step logits equal teacher forcing's."""
    from lmforge.nn.cache import KVCache

    model = tiny()
    src = torch.randint(2, 61, (2, 7))
    src_mask = torch.ones_like(src)
    src_mask[1, 4:] = 0
    tgt = torch.randint(2, 61, (2, 6))
    with torch.no_grad():
        full = model(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt).heads["lm"].logits
        encoded = model.backbone.encode(src, src_mask)
        cache = KVCache()
        steps = []
        for t in range(6):
            out = model.backbone.decode(tgt[:, t:t + 1], encoded, torch.ones(2, t + 1, dtype=torch.long), cache=cache)
            steps.append(model.heads["lm"].logits(out.last_hidden_state))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------- init, save/load
def test_fan_in_init_folds_the_attention_scale_into_the_queries():
    """Mesh TF / HF T5: q ~ N(0, (d * d_kv)^-1/2), k, v ~ N(0, d^-1/2), o ~ N(0, (h * d_kv)^-1/2), wi ~
    N(0, d^-1/2), wo ~ N(0, d_ff^-1/2), embeddings ~ N(0, 1), relative tables ~ N(0, d^-1/2)."""
    torch.manual_seed(0)
    config = ModelConfig.from_name("t5-v1_1-small", vocab_size=4000)
    model = TaskModel(config, {"lm": {"kind": "seq2seq_lm"}})
    d, dkv, h, ff = 512, 64, 6, 1024
    block = model.backbone.encoder.layers[0]
    inner = h * dkv
    q, k = block.attn.qkv.weight[:inner], block.attn.qkv.weight[inner:2 * inner]

    def near(t, std):
        assert abs(t.std().item() / std - 1) < 0.05, (t.std().item(), std)

    near(q, (d * dkv) ** -0.5)
    near(k, d ** -0.5)
    near(block.attn.out.weight, inner ** -0.5)
    near(model.backbone.decoder.layers[0].cross_attn.q.weight, (d * dkv) ** -0.5)
    near(block.mlp.fc_in.weight, d ** -0.5)
    near(block.mlp.fc_out.weight, ff ** -0.5)
    near(model.backbone.input_embeddings().weight, 1.0)
    near(model.heads["lm"].decoder.weight, 1.0)  # the untied v1.1 output projection, as HF draws it
    near(model.backbone.encoder.relative_bias.weight, d ** -0.5 * 1.0)
    assert torch.equal(block.norm1.weight, torch.ones(d))


def test_saves_and_loads(tmp_path):
    model = tiny("t5-v1_1-small")
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).eval()
    batch = dict(input_ids=torch.randint(1, 61, (2, 5)), decoder_input_ids=torch.randint(1, 61, (2, 4)))
    with torch.no_grad():
        assert torch.equal(loaded(**batch).heads["lm"].logits, model(**batch).heads["lm"].logits)


# ----------------------------------------------------------------------------------- HF interop
transformers = pytest.importorskip("transformers")

from parity_helpers import (  # noqa: E402
    assert_loads_in_transformers,
    assert_round_trip,
    assert_seq2seq_parity,
    assert_states,
    random_hf_model,
    saved,
    seq2seq_batch,
)

from lmforge.convert import load_hf, save_hf  # noqa: E402
from lmforge.convert.hf_config import ConfigError, from_hf_config  # noqa: E402
from lmforge.generate import GenerationConfig, generate  # noqa: E402

PAD, EOS, V = 0, 1, 61
TOL = dict(atol=1e-5, rtol=1e-5)
VERSIONS = {"v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
            "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)}


def hf_t5_config(version: str, **overrides):
    """Tiny, encoder and decoder depths differ (2 + 3), d_kv * heads != d_model, 8 buckets up to distance
    20 so the log-spaced buckets are reached by the test lengths."""
    kw = dict(vocab_size=V, d_model=32, d_kv=6, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.1,
              pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD, **VERSIONS[version])
    return transformers.T5Config(**{**kw, **overrides})


def hf_t5(tmp_path, version: str, cls: str = "T5ForConditionalGeneration", seed: int = 0, **overrides):
    """A random HF model (eval), saved; norms and the relative tables perturbed, v1.1's head untied (a
    different lm_head, as the released v1.1 checkpoints have); the token table shrunk and the last decoder
    norm's gain raised so next tokens depend on the source and the past, with sharp distributions (no
    near-ties in generate)."""
    def adjust(model):
        model.shared.weight.mul_(0.1)  # so the decoder's input token does not dominate its output
        if cls == "T5ForConditionalGeneration":
            model.decoder.final_layer_norm.weight.mul_(30.0 if version == "v1.0" else 3.0)
            if version == "v1.1":
                model.lm_head.weight = torch.nn.Parameter(torch.randn(V, 32) * 0.3)

    model = random_hf_model(getattr(transformers, cls), hf_t5_config(version, **overrides), seed=seed, scale=0.3,
                            randomise=lambda name: "layer_norm" in name or "relative_attention_bias" in name,
                            adjust=adjust)
    return saved(model, tmp_path / f"{cls}-{version}")


def batch():
    """Right-padded sources and targets (long enough to reach the log-spaced buckets); decoder inputs =
    labels shifted right behind the pad token, as T5's `_shift_right` builds them."""
    return seq2seq_batch((25, 17, 3), (23, 12, 2), pad=PAD, high=V)


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("cls", ["T5ForConditionalGeneration", "T5Model"])
def test_hf_to_lmforge_parity(cls, version, tmp_path):
    hf, directory = hf_t5(tmp_path, version, cls)
    ours = load_hf(directory).eval()
    c = ours.config
    assert c.family == "t5" and (c.num_layers, c.num_decoder_layers, c.head_dim) == (2, 3, 6)
    assert c.gated_ffn == (version == "v1.1") and c.output_scale == (version == "v1.0")
    if cls == "T5ForConditionalGeneration":
        assert c.tie_word_embeddings == (version == "v1.0")
    inputs, labels = batch()
    assert_seq2seq_parity(hf, ours, inputs, labels, states=3 + 4, lm_head=cls != "T5Model")


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_encoder_model_parity(version, tmp_path):
    hf, directory = hf_t5(tmp_path, version, "T5EncoderModel")
    ours = load_hf(directory).eval()
    assert ours.config.arch == "transformer" and ours.config.num_decoder_layers == 0 and not ours.heads
    inputs, _ = batch()
    with torch.no_grad():
        a = hf(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
        b = ours(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
    assert_states(list(zip(a.hidden_states, b.backbone.hidden_states)), 3)


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("cls", ["T5ForConditionalGeneration", "T5Model", "T5EncoderModel"])
def test_lmforge_to_hf_round_trip(cls, version, tmp_path):
    hf, directory = hf_t5(tmp_path, version, cls)
    ours = load_hf(directory)
    again = assert_round_trip(ours, tmp_path / "export")
    assert again.config == ours.config

    reloaded = assert_loads_in_transformers(getattr(transformers, cls), tmp_path / "export", hf)
    assert type(reloaded).__name__ == cls
    assert reloaded.config.scale_decoder_outputs == hf.config.scale_decoder_outputs


@pytest.mark.parametrize("preset", ["t5-small", "t5-v1_1-small"])
def test_lmforge_models_export_and_match_hf(preset, tmp_path):
    """A model built by lmforge (its own init) exports to a T5ForConditionalGeneration with equal logits."""
    ours = tiny(preset)
    save_hf(ours, tmp_path / "hf")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    inputs, labels = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(**inputs).heads["lm"].logits, hf(**inputs).logits, **TOL)
        torch.testing.assert_close(ours(**inputs, labels=labels).loss, hf(**inputs, labels=labels).loss, **TOL)


def test_refuses_what_it_cannot_build(tmp_path):
    def config(**overrides) -> dict:
        return {**hf_t5_config("v1.0", **overrides).to_dict(), "architectures": ["T5ForConditionalGeneration"]}

    with pytest.raises(ConfigError, match="feed_forward_proj"):
        from_hf_config(config(feed_forward_proj="gated-silu"))
    with pytest.raises(ConfigError, match="T5ForSequenceClassification is not supported"):
        from_hf_config({**config(), "architectures": ["T5ForSequenceClassification"]})
    with pytest.raises(ConfigError, match="norm"):
        save_hf(tiny(norm="layer"), tmp_path / "layer-norm")
    with pytest.raises(ConfigError, match="dropout"):
        save_hf(tiny(ffn_dropout=0.2), tmp_path / "dropouts")


# transformers' generate sizes its cache by the encoder's depth (num_layers): equal depths there
SAME_DEPTH = dict(num_layers=3)


def hf_generate(model, inputs, new: int, eos: int | None, **kw) -> list[list[int]]:
    out = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                         max_new_tokens=new, min_new_tokens=0, decoder_start_token_id=PAD, pad_token_id=PAD,
                         eos_token_id=eos, do_sample=False, **kw)
    rows = []
    for row in out[:, 1:].tolist():  # without the decoder start token
        if eos is not None and eos in row:
            row = row[: row.index(eos) + 1]
        rows.append(row)
    return rows


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_greedy_equals_transformers(version, tmp_path):
    hf, directory = hf_t5(tmp_path, version, seed=3, **SAME_DEPTH)
    ours = load_hf(directory).eval()
    inputs, _ = batch()
    src, mask = inputs["input_ids"], inputs["attention_mask"]
    config = GenerationConfig(max_new_tokens=24, pad_token_id=PAD, decoder_start_token_id=PAD)
    got = generate(ours, src, mask, config).tokens
    assert got == hf_generate(hf, inputs, 24, None)
    assert len({tuple(row) for row in got}) == 3  # the outputs depend on the source
    eos = got[0][3]  # a token greedy reaches: rows stop there
    config.eos_token_id = eos
    got = generate(ours, src, mask, config).tokens
    assert got == hf_generate(hf, inputs, 24, eos)
    assert got[0][-1] == eos and len(got[0]) <= 4


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_beam_search_equals_transformers(version, tmp_path):
    hf, directory = hf_t5(tmp_path, version, seed=4, **SAME_DEPTH)
    ours = load_hf(directory).eval()
    inputs, _ = batch()
    src, mask = inputs["input_ids"], inputs["attention_mask"]
    config = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=10, pad_token_id=PAD,
                              decoder_start_token_id=PAD, length_penalty=0.6)
    got = generate(ours, src, mask, config).tokens
    assert got == hf_generate(hf, inputs, 10, None, num_beams=3, length_penalty=0.6)
    for eos in sorted({t for row in got for t in row}):  # an EOS that ends some chosen hypothesis
        ended = generate(ours, src, mask, dataclasses.replace(config, eos_token_id=eos)).tokens
        if any(row[-1] == eos for row in ended):
            break
    else:
        raise AssertionError("no EOS candidate ends a hypothesis")
    assert ended == hf_generate(hf, inputs, 10, eos, num_beams=3, length_penalty=0.6)
