"""The vocabulary projection at inference, computed in the orientation the CPU's BLAS runs fast.

`F.linear(x, W)` with W a large (V, H) table and x a few rows — each decoding step's next-token
logits — is a poorly served shape for the CPU matmul kernels: the same product computed as W @ x^T,
a (V, N) result read back transposed, runs several times faster, and a single row is fastest as two
(GEMV's path is the slow one). Measured with torch 2.13 on this repository's 2-core AMD EPYC (fp32,
idle, 50,257 x 256, GPT-2's vocabulary at gpt2-mini's width): 1 row 7.7 -> 2.5 ms, 2-8 rows 14-18 ->
3.3 ms, 32 rows 18.8 -> 13.7 ms, 256 rows 100 -> 67 ms; 8,000 x 512 (a translation vocabulary): 3-48
rows 1.2-9x (`bench/bench_generate.py` shows the effect on whole decoding steps). The arithmetic is
the same; only the order of the H-term sums can differ (logits agree to ~1e-6 relative).

Only fp32 on a CPU without autograd takes this path: under autocast the bf16 kernels are fast for
either orientation, on a GPU cuBLAS is, and with gradients the transposed product's backward would
run different (untested for speed) kernels.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def output_projection(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., H) @ weight (V, H)^T + bias (V,) -> (..., V), as F.linear."""
    if (x.device.type != "cpu" or torch.is_grad_enabled() or x.dtype != torch.float32
            or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        return F.linear(x, weight, bias)
    rows = x.reshape(-1, x.shape[-1])  # (N, H)
    n = rows.shape[0]
    if n == 1:  # one column is BLAS's matrix-vector path, the slow one: compute two
        rows = rows.expand(2, -1).contiguous()
    if bias is None:
        out = torch.mm(weight, rows.t())  # (V, N)
    else:
        out = torch.addmm(bias.unsqueeze(1), weight, rows.t())  # (V, N)
    # contiguous: a row-wise argmax or softmax over the strided (N, V) view costs more than this copy
    return out.t()[:n].contiguous().view(*x.shape[:-1], weight.shape[0])  # (..., V)
