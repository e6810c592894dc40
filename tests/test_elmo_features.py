"""ELMo features (Peters et al. 2018 §3.2): per-layer vectors, the scalar mix, pooled sentence vectors,
from `embed_texts` and `lmforge embed` on an ELMo model directory."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from lmforge.cli import embed as embed_cli
from lmforge.elmo_config import ElmoConfig
from lmforge.features import embed_texts
from lmforge.models import TaskModel, load_model, save_model
from lmforge.nn.scalar_mix import ScalarMix

TEXTS = ["the cat sat on the mat", "a dog ran", "the bird sang a long song today", "rain"]


@pytest.fixture(scope="module")
def elmo_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("elmo")
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    config = ElmoConfig(vocab_size=tok.get_vocab_size(), filters=((1, 4), (2, 4), (3, 8)), n_highway=1,
                        lstm_dim=12, projection_dim=6, max_characters_per_token=10)
    torch.manual_seed(0)
    save_model(TaskModel(config, {"lm": {"kind": "bilm"}}), directory, tokenizer=tok)
    return directory, tok


def test_scalar_mix_is_a_softmax_weighted_scaled_sum():
    mix = ScalarMix(3, weights=[0.0, 2.0, -1.0], gamma=0.5)
    layers = [torch.full((1, 2, 4), float(v)) for v in (1.0, 2.0, 3.0)]
    s = torch.softmax(torch.tensor([0.0, 2.0, -1.0]), 0)
    assert torch.allclose(mix.normalized().sum(), torch.tensor(1.0))
    assert torch.allclose(mix(layers), 0.5 * (s[0] * 1 + s[1] * 2 + s[2] * 3).expand(1, 2, 4))
    mix(layers).sum().backward()
    assert mix.weights.grad is not None and mix.gamma.grad is not None  # a task learns s and gamma
    with pytest.raises(ValueError, match="2 weights for 3 layers"):
        ScalarMix(3, weights=[0.0, 1.0])


def test_per_layer_features_and_their_mix(elmo_dir):
    directory, tok = elmo_dir
    model = load_model(directory)
    layers = embed_texts(model, tok, TEXTS, layers=[0, 1, 2], normalize=False)
    assert layers.shape == (4, 3, 12)
    assert np.allclose(layers[:, 0, :6], layers[:, 0, 6:])  # token layer duplicated for both directions
    mix = ScalarMix(3, weights=[1.0, 0.0, -2.0], gamma=1.5, trainable=False)
    mixed = embed_texts(model, tok, TEXTS, normalize=False, scalar_mix=mix)
    s = mix.normalized().detach().numpy()
    # mean pooling is linear: pooling the mix equals mixing the pooled layers
    assert np.allclose(mixed, 1.5 * np.einsum("l,nlh->nh", s, layers), atol=1e-5)


def test_a_texts_vector_does_not_depend_on_its_batch(elmo_dir):
    directory, tok = elmo_dir
    model = load_model(directory)
    together = embed_texts(model, tok, TEXTS, batch_size=4)
    alone = np.concatenate([embed_texts(model, tok, [text]) for text in TEXTS])
    assert np.allclose(together, alone, atol=1e-5)


def test_embed_cli_scalar_mix(elmo_dir, tmp_path):
    directory, tok = elmo_dir
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n")
    out = tmp_path / "mix.npy"
    parser = argparse.ArgumentParser()
    embed_cli.register(parser.add_subparsers())
    args = parser.parse_args(["embed", "--model", str(directory), "--input", str(source), "--out", str(out),
                              "--scalar-mix", "0,0", "--layers", "1,2", "--gamma", "2", "--no-normalize"])
    assert args.func(args) == 0
    vectors = np.load(out)
    per_layer = embed_texts(load_model(directory), tok, TEXTS, layers=[1, 2], normalize=False)
    assert vectors.shape == (4, 12) and np.allclose(vectors, per_layer.mean(1) * 2, atol=1e-5)
    bad = parser.parse_args(["embed", "--model", str(directory), "--input", str(source), "--out", str(out),
                             "--scalar-mix", "0,1,x"])
    with pytest.raises(ValueError, match="--scalar-mix"):
        bad.func(bad)


def layers_and_mask(seed: int, offset: float = 0.0, scale: float = 1.0):
    """Three (2, 5, 4) layers with a padded second row whose padding holds garbage."""
    gen = torch.Generator().manual_seed(seed)
    layers = [offset + scale * torch.randn(2, 5, 4, generator=gen) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    for layer in layers:
        layer[1, 3:] = 1e4
    return layers, mask


def test_standardized_mix_uses_the_real_tokens_statistics():
    layers, mask = layers_and_mask(0)
    mix = ScalarMix(3, weights=[1.0, 0.0, -1.0], gamma=2.0, standardize_dim=4)
    out = mix(layers, mask)  # training: the batch's statistics enter first
    s = mix.normalized().detach()
    real = [layer[mask.bool()] for layer in layers]  # (8, 4): padding excluded
    expected = 2.0 * sum(w * (r - r.mean(0)) / torch.sqrt(r.var(0, unbiased=False) + 1e-5) for w, r in zip(s, real))
    assert torch.allclose(out[mask.bool()], expected, atol=1e-5)
    assert torch.allclose(mix.running_mean, torch.stack([r.mean(0) for r in real]), atol=1e-6)
    assert int(mix.tokens_seen) == 8


def test_running_statistics_pool_every_training_token_and_evaluation_reads_them():
    mix = ScalarMix(3, standardize_dim=4)
    (a, mask_a), (b, mask_b) = layers_and_mask(1), layers_and_mask(2, offset=3.0, scale=0.5)
    mix(a, mask_a)
    mix(b, mask_b)
    pooled = [torch.cat([x[mask_a.bool()], y[mask_b.bool()]]) for x, y in zip(a, b)]  # (16, 4) per layer
    assert torch.allclose(mix.running_mean, torch.stack([p.mean(0) for p in pooled]), atol=1e-5)
    assert torch.allclose(mix.running_var, torch.stack([p.var(0, unbiased=False) for p in pooled]), atol=1e-5)
    mix.eval()
    before = mix.running_mean.clone()
    first = mix(a, mask_a)
    assert torch.equal(mix.running_mean, before) and int(mix.tokens_seen) == 16  # evaluation only reads them
    assert torch.equal(first, mix(a, mask_a))  # and a batch is scored the same whatever else is in it


def test_a_shared_offset_and_scale_do_not_reach_the_mix():
    """What frozen biLM states look like to a task head: a large per-dimension offset shared by every
    token. Standardized, the mix of offset + scale * h is the mix of h."""
    layers, mask = layers_and_mask(3)
    shifted = [torch.linspace(-30, 30, 4) + 5.0 * layer for layer in layers]
    plain, moved = ScalarMix(3, standardize_dim=4), ScalarMix(3, standardize_dim=4)
    assert torch.allclose(plain(layers, mask)[mask.bool()], moved(shifted, mask)[mask.bool()], atol=1e-4)
