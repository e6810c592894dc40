"""bilm-tf/AllenNLP interchange (options.json + weights.hdf5): exact round trip, and the layout the
format documents (bilm-tf `dump_weights`, AllenNLP `_ElmoCharacterEncoder._load_*`, `ElmoLstm.load_weights`).
No ELMo library installs here (AllenNLP is retired and pins old torch), so the layout is checked
against that documented structure rather than by loading the export with AllenNLP."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.elmo_config import ElmoConfig
from lmforge.models import TaskModel

h5py = pytest.importorskip("h5py")

from lmforge.elmo_hdf5 import config_from_options, export_elmo, import_elmo  # noqa: E402

TINY = ElmoConfig(vocab_size=9, filters=((1, 4), (2, 6)), n_highway=2, lstm_dim=8, projection_dim=4,
                  max_characters_per_token=6, char_embedding_dim=3)

# AllenNLP's published options.json of elmo_2x1024_128_2048cnn_1xhighway
SMALL_OPTIONS = {"lstm": {"use_skip_connections": True, "projection_dim": 128, "cell_clip": 3, "proj_clip": 3,
                          "dim": 1024, "n_layers": 2},
                 "char_cnn": {"activation": "relu", "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256],
                                                                [6, 512], [7, 1024]],
                              "n_highway": 1, "embedding": {"dim": 16}, "n_characters": 262,
                              "max_characters_per_token": 50}}


def test_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = TaskModel(TINY).eval()
    export_elmo(model, tmp_path)
    loaded = import_elmo(tmp_path).eval()
    assert loaded.config == TINY
    before, after = model.backbone.state_dict(), loaded.backbone.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    chars = torch.randint(1, 262, (2, 5, 6))
    assert torch.equal(model.backbone(char_ids=chars).last_hidden_state, loaded.backbone(char_ids=chars).last_hidden_state)


def test_layout_follows_the_documented_structure(tmp_path):
    torch.manual_seed(0)
    model = TaskModel(TINY)
    export_elmo(model, tmp_path)
    options = json.loads((tmp_path / "options.json").read_text())
    assert options["lstm"] == {"cell_clip": 3.0, "dim": 8, "n_layers": 2, "proj_clip": 3.0, "projection_dim": 4,
                               "use_skip_connections": True}
    assert options["char_cnn"]["filters"] == [[1, 4], [2, 6]] and options["char_cnn"]["n_characters"] == 262
    F, P, C = 10, 4, 8
    expected = {"char_embed": (261, 3), "CNN/W_cnn_0": (1, 1, 3, 4), "CNN/b_cnn_0": (4,), "CNN/W_cnn_1": (1, 2, 3, 6),
                "CNN/b_cnn_1": (6,), "CNN_proj/W_proj": (F, P), "CNN_proj/b_proj": (P,)}
    for k in range(2):
        expected.update({f"CNN_high_{k}/{n}": (F, F) for n in ("W_carry", "W_transform")})
        expected.update({f"CNN_high_{k}/{n}": (F,) for n in ("b_carry", "b_transform")})
    for d in range(2):
        for layer in range(2):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"
            expected.update({f"{cell}/W_0": (P + P, 4 * C), f"{cell}/B": (4 * C,), f"{cell}/W_P_0": (C, P)})
    with h5py.File(tmp_path / "weights.hdf5") as h5:
        found = {}
        h5.visititems(lambda name, item: found.__setitem__(name, item.shape) if isinstance(item, h5py.Dataset) else None)
        assert found == expected
        # char_embed row r is lmforge's row r + 1 (AllenNLP prepends the zero padding row on load)
        assert torch.equal(torch.from_numpy(h5["char_embed"][...]), model.backbone.token_encoder.char_embedding.weight[1:].detach())
        # TF conv2d kernel [1, width, in, out] = torch Conv1d weight [out, in, width] transposed
        conv = model.backbone.token_encoder.convs[1].weight.detach()
        assert torch.equal(torch.from_numpy(h5["CNN/W_cnn_1"][0, 1, 2, 5:6]), conv[5:6, 2, 1])


def test_published_options_give_the_small_preset():
    assert config_from_options(SMALL_OPTIONS) == ElmoConfig.from_name("elmo-small", vocab_size=0, dropout=0.0)
    with pytest.raises(ValueError, match="missing key 'lstm'"):
        config_from_options({"char_cnn": SMALL_OPTIONS["char_cnn"]})
