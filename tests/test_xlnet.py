"""XLNet's backbone and config on their own: presets, save/load, the relative shift, the stream masks,
segment recurrence, bad inputs."""

from __future__ import annotations

import pytest
import torch

from lmforge.config import PRESET_CLASSES, CheckpointConfig
from lmforge.models import load_model, save_model
from lmforge.models.task_model import TaskModel
from lmforge.models.xlnet import XLNetBackbone
from lmforge.models.xlnet_attention import shift_relative
from lmforge.xlnet_config import XLNetConfig

TINY = dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24)


def test_presets_and_config_round_trip(tmp_path):
    for name, layers, hidden in (("xlnet-base-cased", 12, 768), ("xlnet-large-cased", 24, 1024),
                                 ("xlnet-cpu", 4, 256)):
        config = PRESET_CLASSES[name].from_name(name)
        assert isinstance(config, XLNetConfig) and (config.num_layers, config.hidden_size) == (layers, hidden)
    config = XLNetConfig(**TINY, mem_len=3)
    model = TaskModel(config, {"plm": {"kind": "plm"}, "cls": {"kind": "classification", "num_labels": 3}})
    save_model(model, tmp_path)
    assert CheckpointConfig.load(tmp_path).model == config
    loaded = load_model(tmp_path)
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    assert loaded.heads["plm"].decoder.weight is loaded.backbone.embeddings.tok.weight  # tied


@pytest.mark.parametrize("bad,message", [(dict(hidden_size=15), "divisible"), (dict(mem_len=-1), "mem_len"),
                                         (dict(family="bert"), "family")])
def test_bad_config_is_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        XLNetConfig(**{**TINY, **bad})


def test_shift_relative_reads_each_distance():
    """out[i, j] is the score against distance (mem + i) - j."""
    T, mem = 4, 3
    K = mem + T
    distances = torch.arange(K, -T, -1).float()  # the order of relative_positions
    scores = distances.expand(1, 1, T, K + T).contiguous()
    out = shift_relative(scores, K)[0, 0]
    expected = (mem + torch.arange(T))[:, None] - torch.arange(K)[None, :]
    assert torch.equal(out, expected.float())


def test_stream_masks():
    """§2.3: the query stream sees what perm_mask allows; the content stream also sees itself;
    padding keys are hidden from both; memory is visible to all."""
    perm = torch.tensor([[[0, 1, 1], [0, 1, 1], [0, 0, 0]]], dtype=torch.float)  # (1, 3, 3)
    pad = torch.tensor([[1, 1, 1]])
    content, query = XLNetBackbone.masks(pad, perm, 3, 0)
    assert torch.equal(query[0], perm[0].bool())
    assert torch.equal(content[0], torch.tensor([[0, 1, 1], [0, 0, 1], [0, 0, 0]]).bool())
    content, query = XLNetBackbone.masks(torch.tensor([[0, 1, 1]]), None, 3, 2)
    assert torch.equal(query[0, 0], torch.tensor([0, 0, 1, 0, 0]).bool())  # (1, mem + T): padding key hidden
    assert torch.equal(content[0], torch.tensor([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 0, 0]]).bool())
    assert XLNetBackbone.masks(None, None, 3, 0) == (None, None)


def test_memory_is_the_last_mem_len_states_without_gradient():
    model = XLNetBackbone(XLNetConfig(**TINY, mem_len=5)).eval()
    ids = torch.randint(0, 50, (2, 4))
    first = model(ids, output_hidden_states=True)
    assert len(first.mems) == 2 and first.mems[0].shape == (2, 4, 16)
    assert torch.equal(first.mems[1], first.hidden_states[1])  # each layer's input
    second = model(ids, mems=first.mems, output_hidden_states=True)
    assert second.mems[0].shape == (2, 5, 16) and not second.mems[0].requires_grad
    assert torch.equal(second.mems[0], torch.cat([first.mems[0], second.hidden_states[0]], 1)[:, -5:])
    # the memory changes what the second segment computes
    assert not torch.allclose(second.last_hidden_state, first.last_hidden_state)


def test_bad_inputs_are_named():
    model = XLNetBackbone(XLNetConfig(**TINY)).eval()
    ids = torch.randint(0, 50, (2, 4))
    with pytest.raises(ValueError, match="perm_mask"):
        model(ids, perm_mask=torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match="target_mapping"):
        model(ids, target_mapping=torch.zeros(2, 1, 5))
    with pytest.raises(ValueError, match="one-hot"):
        model(ids, target_mapping=torch.full((2, 1, 4), 0.25))
    with pytest.raises(ValueError, match="at most once"):
        model(ids, target_mapping=torch.eye(4)[[1, 1]].expand(2, 2, 4))
    with pytest.raises(ValueError, match="mems has 1 entries"):
        model(ids, mems=[torch.zeros(2, 3, 16)])
