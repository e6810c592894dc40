"""lmforge.nn.dropout: the cheaper CPU mask keeps dropout's distribution, scale, gradient and
determinism; the written-out attention equals SDPA's when nothing is dropped."""

import math

import pytest
import torch
from torch.nn import functional as F

from lmforge.nn.attention import attention_with_dropout
from lmforge.nn.dropout import Dropout, dropout, keep_mask
from lmforge.nn.masks import attention_mask_for_sdpa


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_is_p_within_sampling_error(p):
    torch.manual_seed(0)
    n = 1 << 20
    keep, scale = keep_mask((n,), p, torch.device("cpu"))
    dropped = 1.0 - keep.float().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)
    # every lane of a 64-bit draw drops at the same rate (the top lane has one random bit fewer)
    lanes = keep.view(-1, 4).float().mean(dim=0)
    assert torch.all((lanes - (1 - p)).abs() < 5 * math.sqrt(p * (1 - p) / (n / 4)))


def test_mask_elements_are_not_correlated_with_their_neighbours():
    torch.manual_seed(1)
    keep, _ = keep_mask((1 << 20,), 0.5, torch.device("cpu"))
    k = keep.float() - 0.5
    for shift in (1, 2, 3, 4):
        assert abs((k[:-shift] * k[shift:]).mean().item()) < 5 * 0.25 / math.sqrt(k.numel())


def test_output_gradient_and_expectation():
    torch.manual_seed(2)
    x = torch.randn(64, 128, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    kept = y != 0
    _, scale = keep_mask((1,), 0.3, torch.device("cpu"))
    torch.testing.assert_close(y[kept], x[kept] * scale)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * scale)
    ones = dropout(torch.ones(1 << 20), 0.3, training=True)
    assert ones.mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(0.3 / 0.7 / (1 << 20)))


def test_seeded_masks_repeat_and_eval_is_identity():
    layer = Dropout(0.1)
    x = torch.randn(8, 16, 32)
    torch.manual_seed(3)
    a = layer(x)
    torch.manual_seed(3)
    b = layer(x)
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert layer.eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_written_out_attention_equals_sdpa(causal, padded):
    torch.manual_seed(4)
    q, k, v = (torch.randn(3, 2, 9, 8) for _ in range(3))
    padding = torch.ones(3, 9, dtype=torch.long)
    if padded:
        padding[0, :4] = 0  # left padding: rows that see no key at all in the causal case
        padding[1, 6:] = 0
    mask, is_causal = attention_mask_for_sdpa(padding, causal, 9)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    got = attention_with_dropout(q, k, v, mask, is_causal, p=0.0)
    torch.testing.assert_close(got, expected)


def test_attention_dropout_zeroes_probabilities_at_rate_p():
    torch.manual_seed(5)
    q = torch.zeros(4, 2, 64, 8)  # uniform attention: every probability is 1/64
    identity = torch.eye(64).expand(4, 2, 64, 64)  # v = I: the output is the probability matrix
    probs = attention_with_dropout(q, q, identity, None, False, p=0.25)
    kept = probs != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / probs.numel())
    _, scale = keep_mask((1,), 0.25, torch.device("cpu"))
    torch.testing.assert_close(probs[kept], torch.full_like(probs[kept], scale / 64))
