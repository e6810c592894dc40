"""Cross-entropy of a vocabulary projection without materialising the (N, V) logits.

For a language-model head most of a training step is the vocabulary projection and its softmax:
(N, V) logits, their log-softmax, a zero-filled (N, V) gradient and the log-softmax backward, each a
full pass over the largest tensor of the step. Here the rows are processed in chunks and the
gradients are formed in the same pass, from d loss / d logits = softmax - onehot (divided by N for the
mean), so each chunk of logits is written once, turned into its gradient in place, and used for the
two gradient matmuls. Same FLOPs, a fraction of the memory traffic and peak memory.

Label smoothing (Szegedy et al. 2016; Vaswani et al. §5.4, eps = 0.1) is defined as
`F.cross_entropy(label_smoothing=eps)` defines it, over the full vocabulary: the target is
(1 - eps) * onehot + eps / V, so per row loss = logsumexp(z) - (1 - eps) z_target - eps mean(z) and
d loss / d z = softmax(z) - (1 - eps) onehot - eps / V. With eps = 0 not one extra operation runs.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

CHUNK_ELEMENTS = 1 << 24  # logits per chunk on CPU (64 MiB in fp32; ~330 rows of a 50k vocabulary)
# On a GPU each chunk costs ~10 kernel launches; 1 GiB chunks keep GPT-2's 16k x 50k logits to 4 chunks
# (instead of 49) while still never holding the whole (N, V) matrix.
CUDA_CHUNK_ELEMENTS = 1 << 28
# Subnormal floats: a peaked or badly scaled softmax (T5's untied N(0, 1) output layer at
# initialisation: 7% of a 16k vocabulary) underflows into fp32 subnormals, and x86 arithmetic on them
# takes microcode assists: on the 2-core CPU the 232 x 16,000 softmax took 9.1 ms instead of 1.7, and
# each fp32 gradient matmul (232 x 16,000 @ 16,000 x 256) 94 ms instead of 8 (torch.set_flush_denormal
# does not reach MKL's threads). So on CPU (GPUs run subnormals at full speed) logits more than
# SOFTMAX_RANGE below the chunk's smallest row max are raised to that floor before the softmax: in a row
# whose max is that smallest one every probability is then >= exp(-50) / V, and times a weight stays a
# normal float for any vocabulary below 10^12 (rows with a larger max keep a lower floor: a speed guard,
# not a numerical one). Each raised probability moves by < exp(-50) = 2e-22 while its row holds one
# >= 1/V: for V up to 10^6 the loss and gradient change by < 1e-15 relative, far below fp32's 6e-8.
SOFTMAX_RANGE = 50.0


def _chunk_rows(rows: int, vocab: int, device: torch.device) -> int:
    """Rows per chunk, spread evenly so that no chunk is a small remainder (a thin matmul)."""
    most = max(16, (CUDA_CHUNK_ELEMENTS if device.type == "cuda" else CHUNK_ELEMENTS) // vocab)
    chunks = max(1, -(-rows // most))  # ceil division
    return max(1, -(-rows // chunks))


def scaled_gradients(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The (hidden, weight, bias) gradients a chunked forward saved, times the upstream gradient.

    Scaled in place: these buffers were made by forward for this one backward (a second backward
    through the same graph fails autograd's version check instead of reusing them)."""
    grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
    weight_dtype, bias_dtype = ctx.dtypes
    return (
        grad_hidden.mul_(grad_loss),  # a 0-dim fp32 factor: bf16 rows are scaled in fp32, then rounded once
        grad_weight.mul_(grad_loss).to(weight_dtype),
        grad_bias.mul_(grad_loss).to(bias_dtype) if grad_bias is not None else None,
    )


def softmax_(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of a contiguous fp32 (c, V) tensor, written over it.

    One fused kernel (row max, exp and sum, scale) where max / sub / exp_ / sum / div were five
    passes over the chunk: on the 2-core CPU, 333 x 50,257, 10 ms against ~60 ms for the five as
    separate ops on bf16 logits (max 12, subtract-and-convert 24, exp 21, sum 2, scale 1). Each output
    element is written after its row's reductions read it, so the in-place call is exact (checked
    against `torch.softmax` in tests/test_core.py)."""
    return torch.ops.aten._softmax.out(x, -1, False, out=x)


def logits_into(out: torch.Tensor, h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """h @ w.T + b written into the reused buffer `out`: directly when `out` has the matmul's dtype (no
    per-chunk allocation), else through one copy (bf16 logits into an fp32 buffer)."""
    if h.dtype != out.dtype:
        return out.copy_(F.linear(h, w, b))
    return torch.mm(h, w.t(), out=out) if b is None else torch.addmm(b, h, w.t(), out=out)


def log_softmax_(x: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the last dimension of a contiguous fp32 (c, V) tensor, written over it: one
    fused kernel instead of logsumexp and a subtraction (each output element is written after its
    row's reductions read it; tests/test_soft_cross_entropy.py checks it against torch's)."""
    return torch.ops.aten._log_softmax.out(x, -1, False, out=x)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, compute_dtype, smoothing):  # type: ignore[override]
        rows, vocab = hidden.shape[0], weight.shape[0]
        need_grad = any(ctx.needs_input_grad[:3])
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.empty_like(weight, dtype=torch.float32) if need_grad else None  # first chunk writes it
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_grad and bias is not None else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        predictions = torch.empty(rows, dtype=torch.long, device=hidden.device)
        step = _chunk_rows(rows, vocab, hidden.device)
        # reused buffers: no (N, V) allocation, and none per chunk (on CPU each large allocation is
        # fresh pages, and faulting them in cost more than the pass that writes them)
        buffer = torch.empty(min(step, rows), vocab, dtype=torch.float32, device=hidden.device)
        cast = compute_dtype != torch.float32  # matmuls in another dtype than the fp32 softmax (bf16)
        # in that dtype: the chunk's logits, later its gradient; and the weight gradient's partial sum
        cast_buffer = torch.empty_like(buffer, dtype=compute_dtype) if cast else None
        partial, partial32 = ((torch.empty_like(weight, dtype=compute_dtype), torch.empty_like(weight, dtype=torch.float32))
                              if cast and need_grad else (None, None))
        if need_grad and rows == 0:
            grad_weight.zero_()
        for start in range(0, rows, step):
            end = min(start + step, rows)
            h = hidden[start:end].to(compute_dtype)
            t = targets[start:end, None]  # (c, 1)
            logits = buffer[: end - start]  # (c, V)
            # bf16 logits (under autocast): max, target and mean read them; one copy pass makes them fp32
            z = cast_buffer[: end - start] if cast else logits
            logits_into(z, h, w, b)
            target_logit = z.gather(1, t).float()  # (c, 1)
            if smoothing:  # the smoothed target: (1 - eps) z_target + eps mean(z)
                target_logit = (1.0 - smoothing) * target_logit + smoothing * z.mean(
                    dim=-1, keepdim=True, dtype=torch.float32)
            top, best = z.max(dim=-1, keepdim=True)  # (c, 1) each
            predictions[start:end] = best.squeeze(1)
            if cast:
                logits.copy_(z)
            if logits.device.type == "cpu":  # no subnormals (SOFTMAX_RANGE); one floor for the chunk, as a
                # per-row (c, 1) floor is a broadcast pass 1.9x slower (333 x 50,257: 2.8 ms against 1.5)
                torch.clamp_(logits, min=float(top.min()) - SOFTMAX_RANGE)
            softmax_(logits)  # (c, V) probabilities, in place
            # logsumexp(z) = max - log p_max: p_max >= 1/V, so this never takes the log of an underflow
            loss += (top.float() - logits.gather(1, best).log() - target_logit).sum()
            if not need_grad:
                continue
            # d summed-loss / d z = softmax(z) - onehot, formed in place; the 1 / N of the mean is applied
            # to the (N, H) and (V, H) results in backward, not in a pass over the (c, V) chunk
            if smoothing:  # ... - ((1 - eps) onehot + eps / V)
                logits.sub_(smoothing / vocab)
            logits.scatter_add_(1, t, torch.full_like(target_logit, -(1.0 - smoothing)))
            g = z.copy_(logits) if cast else logits
            grad_hidden[start:end] = (g @ w).to(hidden.dtype)
            if not cast:
                torch.mm(g.t(), h, out=grad_weight) if start == 0 else grad_weight.addmm_(g.t(), h)
            else:  # a bf16 matmul, as autocast's own Linear backward, accumulated in fp32
                torch.mm(g.t(), h, out=partial)
                # converted into a reused fp32 buffer, then added: 2.5x faster than a mixed-dtype add_
                grad_weight.copy_(partial) if start == 0 else grad_weight.add_(partial32.copy_(partial))
            if grad_bias is not None:
                grad_bias += logits.sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        ctx.rows = max(rows, 1)
        ctx.mark_non_differentiable(predictions)
        return loss / ctx.rows, predictions

    @staticmethod
    def backward(ctx, grad_loss, _grad_predictions):  # type: ignore[override]
        return (*scaled_gradients(ctx, grad_loss / ctx.rows), None, None, None)


@torch.compiler.disable  # dynamo would unroll the chunk loop (compile time grows with chunks); it is one fused pass per chunk already
def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         targets: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean CE of `hidden @ weight.T + bias` (N, V) against `targets` (N,), and the argmax
    predictions (N,). Matmuls run in the autocast dtype when autocast is on, softmax in fp32.
    `label_smoothing` as in `F.cross_entropy` (module docstring)."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    with torch.autocast(device, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, dtype, float(label_smoothing))
