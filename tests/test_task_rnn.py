"""The task RNN of feature-based heads (Peters et al. 2018 §3.3; lmforge.nn.task_rnn): padding never
enters either direction, left padding is refused, and the head's spec rebuilds it."""

from __future__ import annotations

import pytest
import torch

from lmforge.elmo_config import ElmoConfig
from lmforge.heads import build_head
from lmforge.models import TaskModel
from lmforge.models.backbone import BackboneOutput
from lmforge.nn.task_rnn import TaskRNN


def right_padded(lengths: list[int], length: int) -> torch.Tensor:
    return (torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_each_sequence_reads_as_if_alone_and_padding_is_zero(num_layers):
    torch.manual_seed(0)
    rnn = TaskRNN(8, num_layers).eval()
    lengths = [7, 4, 1]
    states = torch.randn(3, 7, 8)
    mask = right_padded(lengths, 7)
    out = rnn(states, mask)
    garbage = states.clone()
    garbage[mask == 0] = 1e3  # whatever sits in the padding must not reach a real position
    assert torch.equal(rnn(garbage, mask), out)
    for row, n in enumerate(lengths):
        alone, _ = rnn.lstm(states[row:row + 1, :n])  # (1, n, 8): no padding at all
        torch.testing.assert_close(out[row, :n], alone[0], rtol=0, atol=1e-6)
        assert torch.count_nonzero(out[row, n:]) == 0


def test_left_padding_is_refused():
    rnn = TaskRNN(8, 1)
    mask = right_padded([3, 5], 5).flip(1)  # real tokens last
    with pytest.raises(ValueError, match="right-padded"):
        rnn(torch.randn(2, 5, 8), mask)


def test_odd_width_is_refused():
    with pytest.raises(ValueError, match="even"):
        TaskRNN(7, 1)


def elmo_backbone():
    config = ElmoConfig(vocab_size=10, filters=((1, 4),), n_highway=0, lstm_dim=8, projection_dim=4)
    torch.manual_seed(0)
    return config, TaskModel(config).backbone


@pytest.mark.parametrize("kind", ["classification", "token_classification"])
def test_a_head_spec_rebuilds_its_task_rnn(kind):
    config, backbone = elmo_backbone()
    head = build_head(config, backbone, {"kind": kind, "num_labels": 3, "task_rnn": 2})
    spec = head.spec()
    assert spec["task_rnn"] == 2 and spec["scalar_mix"] == 3
    again = build_head(config, backbone, spec)
    assert again.rnn is not None and again.rnn.lstm.num_layers == 2
    assert again.state_dict().keys() == head.state_dict().keys()
    head.eval()
    layers = tuple(torch.randn(2, 5, config.hidden_size) for _ in range(3))
    out = BackboneOutput(layers[-1], right_padded([5, 2], 5), hidden_states=layers)
    again.load_state_dict(head.state_dict())
    again.eval()
    assert torch.equal(head(out, {}).logits, again(out, {}).logits)


def test_a_spec_saved_without_a_task_rnn_keeps_none():
    """Heads saved before the task RNN existed name their mix and no RNN: they rebuild as trained."""
    config, backbone = elmo_backbone()
    head = build_head(config, backbone, {"kind": "classification", "num_labels": 2, "scalar_mix": 3})
    assert head.rnn is None and "task_rnn" not in head.spec()


def test_a_pooler_head_refuses_a_task_rnn_it_would_never_run():
    from lmforge.config import ModelConfig

    config = ModelConfig.from_name("bert-tiny", vocab_size=50)
    backbone = TaskModel(config).backbone
    with pytest.raises(ValueError, match="task RNN"):
        build_head(config, backbone, {"kind": "classification", "num_labels": 2, "task_rnn": 1})
    assert build_head(config, backbone, {"kind": "classification", "num_labels": 2}).rnn is None
