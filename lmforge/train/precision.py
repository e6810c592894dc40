"""Numeric precision of a training or inference run: fp32, or bf16 autocast over fp32 weights.

One rule for pre-training, fine-tuning and generation, so `precision=bf16` means the same thing
everywhere and is refused, never silently ignored, where the hardware cannot do it.
"""

from __future__ import annotations

import contextlib
import functools
import platform

import torch


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether the device multiplies bf16 matrices in hardware: CUDA compute capability >= 8
    (Ampere on), x86 CPUs with AVX512-BF16 or AMX, other CPUs where oneDNN has bf16 kernels. Elsewhere
    autocast still runs, but emulated bf16 is slower than fp32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, precision: str) -> str:
    """"auto" -> bf16 on a GPU with native bf16, else fp32; CPU bf16 is asked for explicitly. On an
    AVX512-BF16 CPU it tracks fp32 (tests/test_precision.py) and trained bert-mini MLM 1.7x faster
    at 1 thread, but the gain shrank to 1.1x at 2 threads on a loaded machine, and a default that
    depends on the CPU model would make results and tests differ between machines. An explicit "bf16"
    on a device without native bf16 is an error rather than a silent fp32 (or emulated) run."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and native_bf16("cuda") else "fp32"
    if precision == "bf16" and not native_bf16(device.type):
        what = "GPU" if device.type == "cuda" else f"{device.type} ({platform.machine()})"
        raise ValueError(f"precision=bf16: this {what} has no native bf16 matrix units (CPU: AVX512-BF16 or "
                         "AMX; CUDA: compute capability 8.0+); use precision=fp32 or precision=auto")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}: auto, fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA or CPU: weights, gradients and AdamW state stay fp32 (the master copy);
    matmuls and attention run in bf16, reductions, norms and the loss's softmax in fp32."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
