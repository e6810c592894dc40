"""Chunked soft-target cross-entropy against the plain formula: loss and every student gradient."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lmforge.nn import cross_entropy
from lmforge.nn.soft_cross_entropy import linear_soft_cross_entropy


def plain(h, w, b, th, tw, tb, temperature):
    """DistilBERT's distiller: KLDivLoss(batchmean)(log_softmax(z_s/T), softmax(z_t/T)) * T²."""
    zs, zt = F.linear(h, w, b) / temperature, F.linear(th, tw, tb) / temperature
    return F.kl_div(F.log_softmax(zs, -1), F.softmax(zt, -1), reduction="batchmean") * temperature ** 2


def tensors(rows=37, hidden=8, teacher_hidden=12, vocab=29, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    make = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float32)  # noqa: E731
    h, w = make(rows, hidden).requires_grad_(), make(vocab, hidden).requires_grad_()
    b = make(vocab).requires_grad_() if bias else None
    return h, w, b, make(rows, teacher_hidden), make(vocab, teacher_hidden), make(vocab) if bias else None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_loss_and_gradients_match_the_plain_formula(monkeypatch, bias, temperature):
    monkeypatch.setattr(cross_entropy, "CHUNK_ELEMENTS", 29 * 16 * 3)  # several chunks of 16 rows
    h, w, b, th, tw, tb = tensors(bias=bias)
    ours = linear_soft_cross_entropy(h, w, b, th, tw, tb, temperature)
    grads = torch.autograd.grad(3.0 * ours, [h, w] + ([b] if bias else []))
    ref = plain(h, w, b, th, tw, tb, temperature)
    ref_grads = torch.autograd.grad(3.0 * ref, [h, w] + ([b] if bias else []))
    torch.testing.assert_close(ours, ref)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_zero_when_the_student_is_the_teacher():
    h, w, b, _, _, _ = tensors()
    loss = linear_soft_cross_entropy(h, w, b, h.detach(), w.detach(), b.detach(), 2.0)
    assert abs(loss.item()) < 1e-5
    assert linear_soft_cross_entropy(h, w, b, h.detach() + 1.0, w.detach(), b.detach(), 2.0).item() > 1e-3


def test_no_rows_is_zero_with_zero_gradients():
    h, w, b, th, tw, tb = tensors(rows=0)
    loss = linear_soft_cross_entropy(h, w, b, th, tw, tb, 2.0)
    loss.backward()
    assert loss.item() == 0.0 and w.grad.abs().sum().item() == 0.0


def test_the_teacher_gets_no_gradient():
    h, w, b, th, tw, tb = tensors()
    tw.requires_grad_()
    linear_soft_cross_entropy(h, w, b, th, tw, tb, 2.0).backward()
    assert tw.grad is None and w.grad is not None


def test_bad_input_is_one_line():
    h, w, b, th, tw, tb = tensors()
    with pytest.raises(ValueError, match="temperature"):
        linear_soft_cross_entropy(h, w, b, th, tw, tb, 0.0)
    with pytest.raises(ValueError, match="teacher"):
        linear_soft_cross_entropy(h, w, b, th[:3], tw, tb, 2.0)


def test_in_place_log_softmax_equals_torch():
    from lmforge.nn.cross_entropy import log_softmax_

    x = torch.randn(7, 301) * 20
    expected = torch.log_softmax(x, -1)
    assert torch.equal(log_softmax_(x), expected)
