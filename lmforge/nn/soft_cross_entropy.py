"""Soft-target cross-entropy (distillation) between two vocabulary projections, chunk by chunk.

Distillation on every real token (DistilBERT §2 L_ce, TinyBERT §3.1 prediction layer) compares the
student's and the teacher's distributions over the whole vocabulary: two (N, V) logit matrices per
step, where N is every real token, not only the 15% that MLM predicts. As in `linear_cross_entropy`
the rows are processed in chunks, the student's gradient is formed in the same pass, and neither
(N, V) matrix ever exists: per chunk, three (c, V) fp32 buffers are reused.

The value returned is T² · KL(p_teacher || p_student) at temperature T, averaged over rows: what
DistilBERT's distiller computes (`KLDivLoss(batchmean) * T**2`). It differs from the soft
cross-entropy −Σ p_t log p_s only by the teacher's entropy, a constant of the student, so the
gradient is the same and the loss reaches 0 when the student matches the teacher. The T² factor
keeps gradient magnitudes independent of T (Hinton et al. 2015 §2).
"""

from __future__ import annotations

import torch

from lmforge.nn.cross_entropy import _chunk_rows, log_softmax_, logits_into, scaled_gradients


class _LinearSoftCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, t_hidden, t_weight, t_bias, temperature, compute_dtype):  # type: ignore[override]
        rows, vocab = hidden.shape[0], weight.shape[0]
        need_grad = any(ctx.needs_input_grad[:3])
        w, tw = weight.to(compute_dtype), t_weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        tb = t_bias.to(compute_dtype) if t_bias is not None else None
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_grad else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_grad and bias is not None else None
        kl = torch.zeros((), dtype=torch.float32, device=hidden.device)
        step = _chunk_rows(rows, vocab, hidden.device) // 3 or 1  # three buffers instead of one
        size = (min(step, rows), vocab)
        student, teacher, work = (torch.empty(size, dtype=torch.float32, device=hidden.device) for _ in range(3))
        for start in range(0, rows, step):
            end = min(start + step, rows)
            h = hidden[start:end].to(compute_dtype)
            s, t, d = student[: end - start], teacher[: end - start], work[: end - start]  # (c, V) each
            logits_into(s, h, w, b).div_(temperature)
            logits_into(t, t_hidden[start:end].to(compute_dtype), tw, tb).div_(temperature)
            log_softmax_(s)  # log p_s
            log_softmax_(t)  # log p_t
            torch.sub(t, s, out=d)  # log p_t - log p_s
            t.exp_()  # p_t
            kl += d.mul_(t).sum()
            if not need_grad:
                continue
            # d (T² mean KL) / d z_s = T (p_s - p_t) / N, formed in place
            s.exp_().sub_(t).mul_(temperature / rows)
            g = s.to(compute_dtype)
            grad_hidden[start:end] = (g @ w).to(hidden.dtype)
            grad_weight.addmm_(g.t().float(), h.float())
            if grad_bias is not None:
                grad_bias += s.sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return kl * (temperature * temperature) / max(rows, 1)

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        return (*scaled_gradients(ctx, grad_loss), None, None, None, None, None)


@torch.compiler.disable  # a chunk loop, like linear_cross_entropy: dynamo would unroll it
def linear_soft_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              teacher_hidden: torch.Tensor, teacher_weight: torch.Tensor,
                              teacher_bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """T² · mean over rows of KL(softmax(z_t / T) || softmax(z_s / T)), where z_s = hidden @ weight.T
    + bias (N, V) and z_t = teacher_hidden @ teacher_weight.T + teacher_bias (N, V). Gradients flow to
    the student's hidden, weight and bias only (the teacher is a target). Matmuls run in the
    autocast dtype when autocast is on, the softmaxes in fp32."""
    if temperature <= 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature}")
    if hidden.shape[0] != teacher_hidden.shape[0] or weight.shape[0] != teacher_weight.shape[0]:
        raise ValueError(f"student rows x vocab {hidden.shape[0]} x {weight.shape[0]} != teacher's "
                         f"{teacher_hidden.shape[0]} x {teacher_weight.shape[0]}")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    teacher = (teacher_hidden.detach(), teacher_weight.detach(),
               teacher_bias.detach() if teacher_bias is not None else None)
    with torch.autocast(device, enabled=False):
        return _LinearSoftCrossEntropy.apply(hidden, weight, bias, *teacher, float(temperature), dtype)
