"""ELMo interchange with bilm-tf and AllenNLP: `options.json` + `weights.hdf5`, as bilm-tf's
`dump_weights` writes them and AllenNLP's `_ElmoCharacterEncoder` / `ElmoLstm.load_weights` read them.

The file holds the biLM only (bilm-tf does not dump the softmax). Layout, TF orientation (x @ W):
  char_embed                                      (n_characters - 1, E)  row 0 (padding) is implicit
  CNN/W_cnn_{i}, CNN/b_cnn_{i}                    (1, width, E, count), (count,)
  CNN_high_{k}/W_carry, b_carry, W_transform, b_transform   (F, F), (F,)
  CNN_proj/W_proj, CNN_proj/b_proj                (F, P), (P,)
  RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_0   (input + P, 4C)  rows [x; h], gates i, j, f, o
  RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/B     (4C,)  without TF's forget bias of 1
  RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_P_0 (C, P)
with d = 0 forward, 1 backward. lmforge's ELMo keeps these orientations, so both directions are copies.
`h5py` is an optional dependency (`pip install lmforge[elmo]`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.elmo_config import NUM_CHARACTERS, ElmoConfig
from lmforge.models import TaskModel
from lmforge.models.elmo import ElmoBackbone

OPTIONS_FILE, WEIGHTS_FILE = "options.json", "weights.hdf5"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("the bilm-tf/AllenNLP weights.hdf5 format needs h5py: pip install h5py") from None
    return h5py


def options_from_config(config: ElmoConfig) -> dict[str, Any]:
    """bilm-tf's options.json (the inference form: n_characters 262)."""
    return {
        "bidirectional": True,
        "char_cnn": {"activation": config.cnn_activation, "embedding": {"dim": config.char_embedding_dim},
                     "filters": [list(f) for f in config.filters], "max_characters_per_token":
                     config.max_characters_per_token, "n_characters": config.n_characters,
                     "n_highway": config.n_highway},
        "dropout": config.dropout,
        "lstm": {"cell_clip": config.cell_clip, "dim": config.lstm_dim, "n_layers": config.num_layers,
                 "proj_clip": config.proj_clip, "projection_dim": config.projection_dim,
                 "use_skip_connections": config.use_skip_connections},
        "n_tokens_vocab": config.vocab_size,
    }


def config_from_options(options: dict[str, Any]) -> ElmoConfig:
    """An ElmoConfig from options.json; training-time files say n_characters 261 (no padding row)."""
    try:
        cnn, lstm = options["char_cnn"], options["lstm"]
        if cnn.get("n_characters", NUM_CHARACTERS) not in (NUM_CHARACTERS - 1, NUM_CHARACTERS):
            raise ValueError(f"n_characters {cnn['n_characters']}: expected 261 or 262 (bilm-tf)")
        return ElmoConfig(
            vocab_size=int(options.get("n_tokens_vocab", 0)), filters=tuple(tuple(f) for f in cnn["filters"]),
            n_highway=cnn["n_highway"], char_embedding_dim=cnn["embedding"]["dim"],
            max_characters_per_token=cnn["max_characters_per_token"], cnn_activation=cnn.get("activation", "tanh"),
            lstm_dim=lstm["dim"], projection_dim=lstm.get("projection_dim", lstm["dim"]),
            num_layers=lstm["n_layers"], cell_clip=float(lstm.get("cell_clip") or 0.0),
            proj_clip=float(lstm.get("proj_clip") or 0.0),
            use_skip_connections=bool(lstm.get("use_skip_connections", False)),
            dropout=float(options.get("dropout", 0.0)))
    except KeyError as err:
        raise ValueError(f"options.json: missing key {err}") from None


def _arrays(backbone: ElmoBackbone) -> dict[str, np.ndarray]:
    """Every dataset of weights.hdf5 by path, from the backbone (TF orientation)."""
    cnn = backbone.token_encoder
    out = {"char_embed": cnn.char_embedding.weight[1:]}
    for i, conv in enumerate(cnn.convs):
        out[f"CNN/W_cnn_{i}"] = conv.weight.permute(2, 1, 0).unsqueeze(0)  # (count, E, w) -> (1, w, E, count)
        out[f"CNN/b_cnn_{i}"] = conv.bias
    for k, highway in enumerate(cnn.highways):
        for name, linear in (("carry", highway.carry), ("transform", highway.transform)):
            out[f"CNN_high_{k}/W_{name}"], out[f"CNN_high_{k}/b_{name}"] = linear.weight.t(), linear.bias
    out["CNN_proj/W_proj"], out["CNN_proj/b_proj"] = cnn.projection.weight.t(), cnn.projection.bias
    for layer_index, layer in enumerate(backbone.layers):
        for d in range(2):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer_index}/LSTMCell"
            out[f"{cell}/W_0"] = torch.cat([layer.w_input[d], layer.w_hidden[d]], dim=0)  # (I + P, 4C)
            out[f"{cell}/B"] = layer.bias[d]
            out[f"{cell}/W_P_0"] = layer.w_projection[d]
    return {k: v.detach().float().cpu().numpy() for k, v in out.items()}


def export_elmo(model: TaskModel | ElmoBackbone, out_dir: str | Path) -> Path:
    """Write options.json + weights.hdf5 of an lmforge ELMo model (its biLM; heads are not part of the format)."""
    backbone = getattr(model, "backbone", model)
    if not isinstance(backbone, ElmoBackbone):
        raise ValueError(f"export to the bilm-tf format needs an ELMo model, got {type(backbone).__name__}")
    if not backbone.config.reads_characters:
        # AllenNLP's ElmoBiLm builds its token layer from options["char_cnn"] and reads the CNN datasets
        # only; a word table has no place in that pair of files
        raise ValueError(f"options.json + weights.hdf5 hold a character-CNN biLM; this ELMo has a "
                         f"{backbone.config.token_encoder} token encoder (elmo-cpu-word), which AllenNLP "
                         "cannot read: keep the lmforge model directory")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / OPTIONS_FILE).write_text(json.dumps(options_from_config(backbone.config), indent=2) + "\n")
    with _h5py().File(out / WEIGHTS_FILE, "w") as h5:
        for path, array in _arrays(backbone).items():
            h5.create_dataset(path, data=array)
    return out


def import_elmo(directory: str | Path) -> TaskModel:
    """An lmforge ELMo model (backbone, no heads) from a bilm-tf/AllenNLP options.json + weights.hdf5."""
    directory = Path(directory)
    try:
        options = json.loads((directory / OPTIONS_FILE).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory / OPTIONS_FILE}: not found (a bilm-tf model has options.json)") from None
    model = TaskModel(config_from_options(options), init=False)
    backbone = model.backbone
    expected = _arrays(backbone)
    with _h5py().File(directory / WEIGHTS_FILE, "r") as h5:
        missing = [path for path in expected if path not in h5]
        if missing:
            raise ValueError(f"{directory / WEIGHTS_FILE}: missing datasets {missing[:5]}")
        arrays = {path: np.asarray(h5[path]) for path in expected}
    wrong = [f"{p}: file {arrays[p].shape} vs model {expected[p].shape}" for p in expected
             if arrays[p].shape != expected[p].shape]
    if wrong:
        raise ValueError(f"{directory / WEIGHTS_FILE}: wrong shapes: {wrong[:5]}")
    _load(backbone, {k: torch.from_numpy(v) for k, v in arrays.items()})
    return model


@torch.no_grad()
def _load(backbone: ElmoBackbone, arrays: dict[str, torch.Tensor]) -> None:
    """The inverse of `_arrays`."""
    cnn = backbone.token_encoder
    cnn.char_embedding.weight.zero_()
    cnn.char_embedding.weight[1:] = arrays["char_embed"]
    for i, conv in enumerate(cnn.convs):
        conv.weight.copy_(arrays[f"CNN/W_cnn_{i}"][0].permute(2, 1, 0))  # (w, E, count) -> (count, E, w)
        conv.bias.copy_(arrays[f"CNN/b_cnn_{i}"])
    for k, highway in enumerate(cnn.highways):
        for name, linear in (("carry", highway.carry), ("transform", highway.transform)):
            linear.weight.copy_(arrays[f"CNN_high_{k}/W_{name}"].t())
            linear.bias.copy_(arrays[f"CNN_high_{k}/b_{name}"])
    cnn.projection.weight.copy_(arrays["CNN_proj/W_proj"].t())
    cnn.projection.bias.copy_(arrays["CNN_proj/b_proj"])
    for layer_index, layer in enumerate(backbone.layers):
        inputs = layer.w_input.shape[1]
        for d in range(2):
            cell = f"RNN_{d}/RNN/MultiRNNCell/Cell{layer_index}/LSTMCell"
            layer.w_input[d].copy_(arrays[f"{cell}/W_0"][:inputs])
            layer.w_hidden[d].copy_(arrays[f"{cell}/W_0"][inputs:])
            layer.bias[d].copy_(arrays[f"{cell}/B"])
            layer.w_projection[d].copy_(arrays[f"{cell}/W_P_0"])
