"""ELMo biLM backbone (Peters et al. 2018 §3): characters, shapes, directions, clipping, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.config import CheckpointConfig
from lmforge.elmo_chars import char_table, token_char_ids
from lmforge.elmo_config import ElmoConfig
from lmforge.models import TaskModel, load_model, save_model
from lmforge.models.elmo import ElmoBackbone, reverse_padded

TINY = dict(vocab_size=20, filters=((1, 4), (2, 4), (3, 8)), n_highway=2, lstm_dim=12, projection_dim=6,
            max_characters_per_token=10, dropout=0.0)


def tiny(**kw) -> ElmoConfig:
    return ElmoConfig(**{**TINY, **kw})


def chars(words: list[list[str]], width: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(w) for w in words)
    ids = torch.zeros(len(words), T, width, dtype=torch.long)
    mask = torch.zeros(len(words), T, dtype=torch.long)
    for b, sentence in enumerate(words):
        ids[b, :len(sentence)] = torch.from_numpy(char_table(sentence, width).astype(np.int64))
        mask[b, :len(sentence)] = 1
    return ids, mask


def test_char_ids_follow_bilm_tf():
    # AllenNLP's ELMoCharacterMapper: bow 258, eow 259, pad 260, <S> = bow bos(256) eow, all + 1
    assert token_char_ids("hé", 6).tolist() == [259, 105, 196, 170, 260, 261]
    assert token_char_ids("<S>", 5).tolist() == [259, 257, 260, 261, 261]
    assert token_char_ids("</S>", 5).tolist() == [259, 258, 260, 261, 261]
    long = token_char_ids("a" * 80)
    assert long.shape == (50,) and long[0] == 259 and long[49] == 260 and (long[1:49] == ord("a") + 1).all()


def test_presets_match_the_published_options():
    original = ElmoConfig.from_name("elmo-original")
    assert (original.n_filters, original.n_highway, original.lstm_dim, original.projection_dim) == (2048, 2, 4096, 512)
    assert (original.cell_clip, original.proj_clip, original.n_characters) == (3.0, 3.0, 262)
    small = ElmoConfig.from_name("elmo-small")
    assert (small.n_filters, small.n_highway, small.lstm_dim, small.projection_dim) == (2048, 1, 1024, 128)
    with pytest.raises(ValueError, match="unknown ELMo preset"):
        ElmoConfig.from_name("elmo-huge")


def test_hidden_states_are_token_layer_and_bilstm_layers():
    torch.manual_seed(0)
    backbone = ElmoBackbone(tiny()).eval()
    ids, mask = chars([["the", "cat", "sat"], ["a", "dog"]])
    out = backbone(attention_mask=mask, char_ids=ids, output_hidden_states=True)
    assert backbone.num_hidden_states() == 3 and len(out.hidden_states) == 3
    assert all(h.shape == (2, 3, 12) for h in out.hidden_states)
    token = out.hidden_states[0]
    assert torch.equal(token[..., :6], token[..., 6:])  # duplicated for both directions
    assert torch.equal(out.last_hidden_state, out.hidden_states[-1])


def test_directions_see_only_their_side_and_padding_changes_nothing():
    torch.manual_seed(0)
    backbone = ElmoBackbone(tiny()).eval()
    base, mask = chars([["w1", "w2", "w3", "w4"]])
    changed, _ = chars([["w1", "w2", "XX", "w4"]])
    a = backbone(attention_mask=mask, char_ids=base).last_hidden_state
    b = backbone(attention_mask=mask, char_ids=changed).last_hidden_state
    P = 6
    assert torch.allclose(a[0, :2, :P], b[0, :2, :P])  # forward states before the change are the same
    assert not torch.allclose(a[0, 2:, :P], b[0, 2:, :P])
    assert torch.allclose(a[0, 3:, P:], b[0, 3:, P:])  # backward states after it are the same
    assert not torch.allclose(a[0, :3, P:], b[0, :3, P:])
    padded, pmask = chars([["w1", "w2", "w3", "w4"], ["w1", "w2"]])
    short = backbone(attention_mask=pmask, char_ids=padded).last_hidden_state
    alone = backbone(char_ids=chars([["w1", "w2"]])[0]).last_hidden_state
    assert torch.allclose(short[0], a[0], atol=1e-6)
    assert torch.allclose(short[1, :2], alone[0], atol=1e-6)


def test_each_spelling_is_encoded_once_with_the_per_token_values_and_gradients():
    """encode_tokens runs the CNN on distinct spellings only; vectors and weight gradients equal the CNN
    applied to every token (repeated words, padding)."""
    torch.manual_seed(0)
    backbone = ElmoBackbone(tiny())
    ids, _ = chars([["the", "cat", "the", "the"], ["a", "cat"]])
    once = backbone.encode_tokens(None, ids)
    every = backbone.token_encoder(ids.view(-1, ids.shape[-1])).view(*ids.shape[:2], -1)
    torch.testing.assert_close(once, every, atol=1e-6, rtol=1e-6)
    weights = list(backbone.token_encoder.parameters())
    target = torch.randn_like(once)
    grads_once = torch.autograd.grad((once * target).sum(), weights)
    grads_every = torch.autograd.grad((every * target).sum(), weights)
    for a, b in zip(grads_once, grads_every, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_reverse_padded_is_its_own_inverse():
    x = torch.arange(8.0).view(2, 4, 1)
    lengths = torch.tensor([4, 2])
    assert reverse_padded(x, lengths)[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)


def test_lstm_matches_nn_lstm_without_clipping():
    """With clipping off, a direction is TF's LSTMCell with projection = nn.LSTM(proj_size) with the
    gates reordered (i, j, f, o -> i, f, g, o) and the forget bias folded in."""
    torch.manual_seed(0)
    config = tiny(cell_clip=0.0, proj_clip=0.0, num_layers=1)
    layer = ElmoBackbone(config).layers[0]
    C = config.lstm_dim
    ref = torch.nn.LSTM(6, C, proj_size=6, batch_first=True)
    with torch.no_grad():
        i, j, f, o = layer.w_input[0].t().split(C)
        ref.weight_ih_l0.copy_(torch.cat([i, f, j, o]))
        i, j, f, o = layer.w_hidden[0].t().split(C)
        ref.weight_hh_l0.copy_(torch.cat([i, f, j, o]))
        i, j, f, o = layer.bias[0].split(C)
        ref.bias_ih_l0.copy_(torch.cat([i, f + 1.0, j, o]))
        ref.bias_hh_l0.zero_()
        ref.weight_hr_l0.copy_(layer.w_projection[0].t())
    x = torch.randn(2, 5, 6)
    ours = layer(torch.stack([x, x]))[0]
    assert torch.allclose(ours, ref(x)[0], atol=1e-5)


def test_clipping_bounds_the_projection():
    torch.manual_seed(0)
    layer = ElmoBackbone(tiny(proj_clip=0.05)).layers[0]
    out = layer(torch.randn(2, 3, 4, 6) * 10)
    assert out.abs().max() <= 0.05 + 1e-7


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = TaskModel(tiny())
    save_model(model, tmp_path)
    assert CheckpointConfig.load(tmp_path).model == tiny()
    loaded = load_model(tmp_path).eval()
    ids, mask = chars([["ab", "cd"]])
    assert torch.equal(model.eval().backbone(char_ids=ids).last_hidden_state,
                       loaded.backbone(char_ids=ids).last_hidden_state)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="needs char_ids"):
        ElmoBackbone(tiny())(input_ids=torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="exceed max_characters_per_token"):
        tiny(filters=((12, 4),))
