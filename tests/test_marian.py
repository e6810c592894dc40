"""The original Transformer (Vaswani et al. 2017) as lmforge builds it: the "marian" presets, Marian's
sinusoid layout, embedding scaling, the seq2seq LM head and label-smoothed chunked cross-entropy."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.heads import IGNORE
from lmforge.models.task_model import TaskModel, load_model, save_model
from lmforge.nn import cross_entropy as ce
from lmforge.nn.embeddings import sinusoidal_halves_table

TINY = dict(vocab_size=61, hidden_size=32, num_layers=2, num_decoder_layers=3, num_heads=4, intermediate_size=37,
            max_position_embeddings=64, pad_token_id=0, dropout=0.0)


def tiny_model(**overrides) -> TaskModel:
    torch.manual_seed(0)
    config = ModelConfig.from_name("transformer-base", **{**TINY, **overrides})
    return TaskModel(config, {"lm": {"kind": "seq2seq_lm", "label_smoothing": 0.1}}).eval()


# ----------------------------------------------------------------------------------- presets
def parameters(name: str) -> int:
    model = TaskModel(ModelConfig.from_name(name), {"lm": {"kind": "seq2seq_lm"}})
    return sum(p.numel() for p in model.parameters())


def test_base_preset_has_the_papers_size():
    """Vaswani et al. Table 3: the base model has 65M parameters (a 37k shared vocabulary, §5.1); ours
    counts the same layers (no separate output matrix, §3.4) plus the 37k output bias."""
    config = ModelConfig.from_name("transformer-base")
    assert (config.num_layers, config.num_decoder_layers, config.hidden_size, config.intermediate_size,
            config.num_heads, config.dropout) == (6, 6, 512, 2048, 8, 0.1)
    assert config.arch == "encoder-decoder" and config.norm_position == "post" and not config.embedding_norm
    assert 61e6 < parameters("transformer-base") < 66e6
    big = ModelConfig.from_name("transformer-big")
    assert (big.hidden_size, big.intermediate_size, big.num_heads, big.dropout) == (1024, 4096, 16, 0.3)
    small = ModelConfig.from_name("transformer-small")
    assert (small.num_layers, small.num_decoder_layers, small.hidden_size, small.num_heads) == (3, 3, 256, 4)


# ----------------------------------------------------------------------------------- embeddings
def test_sinusoid_halves_layout_follows_the_formula():
    """Vaswani et al. §3.5 with sin in the first half of the dims, cos in the second, no offset."""
    table = sinusoidal_halves_table(50, 16)
    pos, i = 37, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert table[pos, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert table[pos, 8 + i].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(table[0, :8], torch.zeros(8)) and torch.equal(table[0, 8:], torch.ones(8))


def test_embeddings_are_scaled_and_the_sinusoid_is_not_stored():
    model = tiny_model()
    emb = model.backbone.encoder.embeddings
    ids = torch.tensor([[5, 9, 2]])
    expected = emb.tok(ids) * math.sqrt(32) + sinusoidal_halves_table(64, 32)[:3]
    torch.testing.assert_close(emb(ids), expected)
    assert not any("pos" in key for key in model.state_dict())  # recomputed from the config
    assert not any("pos" in name for name, _ in model.named_parameters())


def test_one_table_for_encoder_decoder_and_output():
    model = tiny_model()
    table = model.backbone.input_embeddings().weight
    assert model.backbone.decoder.embeddings.tok.weight is table
    assert model.heads["lm"].decoder.weight is table
    assert model.heads["lm"].bias.shape == (61,)


def test_saves_and_loads(tmp_path):
    model = tiny_model()
    with torch.no_grad():
        model.heads["lm"].bias.normal_()
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).eval()
    assert loaded.head_specs() == model.head_specs()
    batch = dict(input_ids=torch.randint(1, 61, (2, 5)), decoder_input_ids=torch.randint(1, 61, (2, 4)))
    with torch.no_grad():
        assert torch.equal(loaded(**batch).heads["lm"].logits, model(**batch).heads["lm"].logits)


# ----------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("bias", [True, False])
def test_label_smoothed_linear_cross_entropy_equals_torch(monkeypatch, bias):
    """Loss and gradients equal F.cross_entropy(label_smoothing=0.1) over materialised logits, across
    several chunks (the last one partial)."""
    monkeypatch.setattr(ce, "CHUNK_ELEMENTS", 7 * 50)
    torch.manual_seed(0)
    hidden = torch.randn(23, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    b = torch.randn(50, dtype=torch.float64, requires_grad=True) if bias else None
    targets = torch.randint(0, 50, (23,))
    params = [hidden, weight] + ([b] if bias else [])
    reference = F.cross_entropy(F.linear(hidden, weight, b), targets, label_smoothing=0.1)
    expected = torch.autograd.grad(3.0 * reference, params)
    loss, predictions = ce.linear_cross_entropy(hidden, weight, b, targets, label_smoothing=0.1)
    got = torch.autograd.grad(3.0 * loss, params)
    torch.testing.assert_close(loss, reference.float(), rtol=1e-6, atol=1e-6)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    assert torch.equal(predictions, F.linear(hidden, weight, b).argmax(-1))
    plain, _ = ce.linear_cross_entropy(hidden, weight, b, targets)
    assert not torch.allclose(plain, loss)  # smoothing changes the loss


def test_label_smoothing_out_of_range_is_refused():
    with pytest.raises(ValueError, match="label_smoothing"):
        ce.linear_cross_entropy(torch.randn(2, 4), torch.randn(5, 4), None, torch.zeros(2, dtype=torch.long), 1.5)


def test_seq2seq_head_predicts_labels_unshifted_with_smoothing():
    """Position t's logits score labels[t] (the decoder inputs are the labels shifted right), padding
    labels are ignored; fused and plain heads agree in loss and gradients."""
    fused = tiny_model()
    plain = TaskModel(fused.config, {"lm": {"kind": "seq2seq_lm", "label_smoothing": 0.1, "fused_loss": False}})
    plain.load_state_dict(fused.state_dict())
    plain.eval()
    with torch.no_grad():
        fused.heads["lm"].bias.normal_()
        plain.heads["lm"].bias.copy_(fused.heads["lm"].bias)
    src = torch.randint(1, 61, (2, 6))
    labels = torch.randint(1, 61, (2, 5))
    labels[1, 3:] = IGNORE
    start = fused.config.decoder_start_id
    decoder_input_ids = torch.cat([torch.full((2, 1), start), labels[:, :-1].clamp(min=0)], 1)  # shifted right
    decoder_mask = torch.ones_like(labels)
    decoder_mask[1, 4:] = 0
    batch = dict(input_ids=src, decoder_input_ids=decoder_input_ids, decoder_attention_mask=decoder_mask)
    out = fused(**batch, labels=labels)
    logits = fused(**batch).heads["lm"].logits  # (B, T, V)
    keep = labels != IGNORE
    expected = F.cross_entropy(logits[keep], labels[keep], label_smoothing=0.1)
    torch.testing.assert_close(out.loss, expected, atol=1e-6, rtol=1e-6)
    other = plain(**batch, labels=labels)
    torch.testing.assert_close(other.loss, out.loss, atol=1e-6, rtol=1e-6)
    metrics = fused.heads["lm"].metrics("lm", fused.heads["lm"].metric_counts("lm", out.heads["lm"]))
    assert set(metrics) == {"lm_loss", "lm_accuracy"}  # exp(smoothed loss) is no perplexity
    out.loss.backward()
    other.loss.backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


# ----------------------------------------------------------------------------------- HF interop
transformers = pytest.importorskip("transformers")

from _beam_helpers import eos_that_drops_a_prompt  # noqa: E402
from parity_helpers import (  # noqa: E402
    assert_loads_in_transformers,
    assert_round_trip,
    assert_seq2seq_parity,
    random_hf_model,
    saved,
    seq2seq_batch,
)

from lmforge.convert import load_hf, save_hf  # noqa: E402
from lmforge.convert.hf_config import ConfigError, from_hf_config  # noqa: E402
from lmforge.convert.mapping import ConversionError  # noqa: E402
from lmforge.generate import GenerationConfig, generate  # noqa: E402

PAD, EOS, V = 60, 1, 61


def hf_marian_config(**overrides):
    """Tiny, with encoder and decoder depths that differ (2 + 3) so the {enc}/{dec} ranges are exercised."""
    kw = dict(vocab_size=V, d_model=32, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
              decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
              pad_token_id=PAD, decoder_start_token_id=PAD, eos_token_id=EOS, forced_eos_token_id=None,
              scale_embedding=True, activation_function="swish", dropout=0.1)
    return transformers.MarianConfig(**{**kw, **overrides})


def hf_marian(tmp_path, cls: str = "MarianMTModel", seed: int = 0, **overrides):
    """A random HF model (eval) with non-zero biases, LayerNorm shifts and final_logits_bias, saved; the
    last decoder LayerNorm's gain is scaled up so next-token distributions are sharp (no near-ties in
    generate) while the tokens still depend on the source."""
    def adjust(model):
        model.get_decoder().layers[-1].final_layer_norm.weight.mul_(30.0)
        if cls == "MarianMTModel":
            model.final_logits_bias.normal_(std=0.5)

    model = random_hf_model(getattr(transformers, cls), hf_marian_config(**overrides), seed=seed,
                            randomise=lambda name: name.endswith("bias") or "layer_norm" in name, adjust=adjust)
    return saved(model, tmp_path / cls)


def batch():
    """Right-padded sources and targets of different lengths; decoder inputs = labels shifted right."""
    return seq2seq_batch((7, 5, 3), (6, 4, 2), pad=PAD, high=PAD)


@pytest.mark.parametrize("cls", ["MarianMTModel", "MarianModel"])
def test_hf_to_lmforge_parity(cls, tmp_path):
    hf, directory = hf_marian(tmp_path, cls)
    ours = load_hf(directory).eval()
    assert ours.config.family == "marian" and ours.config.activation == "silu" and ours.config.scale_embeddings
    assert (ours.config.num_layers, ours.config.num_decoder_layers) == (2, 3)
    inputs, labels = batch()
    # embeddings + one per layer, each stack
    assert_seq2seq_parity(hf, ours, inputs, labels, states=3 + 4, lm_head=cls != "MarianModel")


@pytest.mark.parametrize("cls", ["MarianMTModel", "MarianModel"])
def test_lmforge_to_hf_round_trip(cls, tmp_path):
    hf, directory = hf_marian(tmp_path, cls)
    ours = load_hf(directory)
    again = assert_round_trip(ours, tmp_path / "export")
    assert again.config == ours.config

    # the sinusoids are not stored (MarianMTModel ignores them on save too); MarianModel re-creates them
    reloaded = assert_loads_in_transformers(getattr(transformers, cls), tmp_path / "export", hf,
                                            missing_ok=lambda key: "embed_positions" in key)
    assert reloaded.config.decoder_start_token_id == PAD and reloaded.config.forced_eos_token_id is None


def test_refuses_what_it_cannot_build(tmp_path):
    def config(**overrides) -> dict:
        return {**hf_marian_config(**overrides).to_dict(), "architectures": ["MarianMTModel"]}

    with pytest.raises(ConfigError, match="decoder_ffn_dim"):
        from_hf_config(config(decoder_ffn_dim=64))
    with pytest.raises(ConfigError, match="share_encoder_decoder_embeddings"):
        from_hf_config(config(share_encoder_decoder_embeddings=False))
    with pytest.raises(ConfigError, match="activation_dropout"):
        from_hf_config(config(activation_dropout=0.1))
    with pytest.raises(ConfigError, match="not supported"):
        from_hf_config({**config(), "architectures": ["MarianForCausalLM"]})
    ours = TaskModel(ModelConfig.from_name("transformer-base", **TINY, norm_position="pre"),
                     {"lm": {"kind": "seq2seq_lm"}})
    with pytest.raises(ConfigError, match="norm_position"):
        save_hf(ours, tmp_path / "pre-ln")
    untied = TaskModel(ModelConfig.from_name("transformer-base", **TINY, tie_word_embeddings=False),
                       {"lm": {"kind": "seq2seq_lm"}})
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        save_hf(untied, tmp_path / "untied")


def test_token_tables_stored_under_several_names_must_agree(tmp_path):
    """transformers 5 unties encoder/decoder tables from `shared` with tie_word_embeddings=False; such a
    checkpoint (three different tables) is not the one-table model lmforge builds."""
    _, directory = hf_marian(tmp_path, tie_word_embeddings=False)
    with pytest.raises(ConversionError, match="should be the same tensor"):
        load_hf(directory)


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


def test_greedy_equals_transformers(tmp_path):
    hf, directory = hf_marian(tmp_path, seed=3)
    ours = load_hf(directory).eval()
    inputs, _ = batch()
    src, mask = inputs["input_ids"], inputs["attention_mask"]
    config = GenerationConfig(max_new_tokens=12, pad_token_id=PAD, decoder_start_token_id=PAD)
    got = generate(ours, src, mask, config).tokens
    assert got == hf_generate(hf, inputs, 12, None)
    eos = got[0][3]  # a token greedy reaches: rows stop there
    config.eos_token_id = eos
    got = generate(ours, src, mask, config).tokens
    assert got == hf_generate(hf, inputs, 12, eos)
    assert got[0][-1] == eos and len(got[0]) <= 4


@pytest.mark.parametrize("length_penalty", [1.0, 0.6])
def test_beam_search_equals_transformers(length_penalty, tmp_path):
    hf, directory = hf_marian(tmp_path, seed=4)
    ours = load_hf(directory).eval()
    inputs, _ = batch()
    src, mask = inputs["input_ids"], inputs["attention_mask"]
    config = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=10, pad_token_id=PAD,
                              decoder_start_token_id=PAD, length_penalty=length_penalty)
    got = generate(ours, src, mask, config).tokens
    assert got == hf_generate(hf, inputs, 10, None, num_beams=3, length_penalty=length_penalty)
    eos, got = eos_that_ends_a_hypothesis(ours, src, mask, config, got)
    assert got == hf_generate(hf, inputs, 10, eos, num_beams=3, length_penalty=length_penalty)


def test_beam_search_encodes_each_source_once(tmp_path, monkeypatch):
    """The beams of one source share its encoder states and cross-attention keys/values (transformers
    also encodes once; lmforge.nn.attention also reads them once per source)."""
    _, directory = hf_marian(tmp_path, seed=4)
    ours = load_hf(directory).eval()
    inputs, _ = batch()
    encoded_rows = []
    encode = type(ours.backbone).encode

    def spy(self, input_ids, *args, **kwargs):
        encoded_rows.append(input_ids.shape[0])
        return encode(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(type(ours.backbone), "encode", spy)
    config = GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=6, pad_token_id=PAD,
                              decoder_start_token_id=PAD)
    generate(ours, inputs["input_ids"], inputs["attention_mask"], config)
    assert encoded_rows == [len(inputs["input_ids"])]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_generation_without_cache_equals_generation_with_cache(strategy, tmp_path):
    """Without a cache the decoder re-runs every step, its beams still sharing one encoding per source."""
    _, directory = hf_marian(tmp_path, seed=4)
    ours = load_hf(directory).eval()
    inputs, _ = batch()
    config = GenerationConfig(strategy=strategy, num_beams=3, max_new_tokens=8, pad_token_id=PAD,
                              decoder_start_token_id=PAD)
    cached = generate(ours, inputs["input_ids"], inputs["attention_mask"], config).tokens
    config.use_cache = False
    assert generate(ours, inputs["input_ids"], inputs["attention_mask"], config).tokens == cached


def test_beam_search_drops_finished_sources_and_decodes_the_rest_as_alone(tmp_path, monkeypatch):
    """A source whose search is over leaves the batch (its rows, encoder states and cross-attention
    keys/values are dropped); the others translate as they do alone, and as transformers does."""
    hf, directory = hf_marian(tmp_path, seed=0)  # a tiny random model's outputs hardly depend on the source:
    ours = load_hf(directory).eval()  # with this seed some EOS ends one source's search before the others
    inputs, _ = batch()
    src, mask = inputs["input_ids"], inputs["attention_mask"]
    config = GenerationConfig(strategy="beam", num_beams=2, max_new_tokens=20, pad_token_id=PAD,
                              decoder_start_token_id=PAD)
    eos, got, rows_left = eos_that_drops_a_prompt(monkeypatch, lambda c: generate(ours, src, mask, c).tokens,
                                                  config, range(ours.config.vocab_size))
    config = dataclasses.replace(config, eos_token_id=eos)
    assert rows_left < 2 * len(src)
    assert got == [generate(ours, src[i:i + 1], mask[i:i + 1], config).tokens[0] for i in range(len(src))]
    assert got == hf_generate(hf, inputs, 20, eos, num_beams=2, length_penalty=1.0)


def eos_that_ends_a_hypothesis(model, src, mask, config: GenerationConfig,
                               tokens: list[list[int]]) -> tuple[int, list[list[int]]]:
    """A token of the EOS-free output that, made the EOS, ends some row's chosen hypothesis (so
    finished hypotheses compete with live ones); and the output with it."""
    for eos in sorted({t for row in tokens for t in row}):
        out = generate(model, src, mask, dataclasses.replace(config, eos_token_id=eos)).tokens
        if any(row[-1] == eos for row in out):
            return eos, out
    raise AssertionError("no EOS candidate ends a hypothesis")
