"""Named tensor transforms between HF's layout and ours, each invertible (round trips stay bit-exact).

A key-map rule reads one or several HF tensors and makes one of ours. Most rules copy; the layouts
that differ are named here instead of being special cases of the engine:
- `TRANSPOSE`: GPT's Conv1D stores weights (in, out), a Linear (out, in);
- `Fuse(dim)`: our one qkv Linear <-> HF's separate query/key/value Linears (concatenated on `dim`);
- `SplitHeads(n)`: XLNet-style (..., n_heads, head_size) parameters <-> our flat (..., n_heads * head_size).

`to_ours` raises ValueError with the problem (the engine adds the tensor names); `to_hf` gets the
number of HF tensors the rule names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class Transform(Protocol):
    """HF tensor(s) <-> one of ours. `many`: whether it reads several HF tensors (a fuse)."""

    name: str
    many: bool

    def to_ours(self, parts: Sequence[torch.Tensor]) -> torch.Tensor: ...

    def to_hf(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]: ...


@dataclass(frozen=True)
class Identity:
    name: str = "copy"
    many: bool = False

    def to_ours(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return parts[0]

    def to_hf(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        return [tensor]


@dataclass(frozen=True)
class Transpose:
    """A 2-D weight stored the other way round (Conv1D (in, out) vs Linear (out, in))."""

    name: str = "transpose"
    many: bool = False

    def to_ours(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        if parts[0].dim() != 2:
            raise ValueError(f"shape {tuple(parts[0].shape)} cannot be transposed (expected 2-D)")
        return parts[0].t()

    def to_hf(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        return [tensor.t()]


@dataclass(frozen=True)
class Fuse:
    """Several equally shaped HF tensors concatenated along `dim` into one of ours; split back into
    equal chunks on export (q, k, v -> qkv: (3H, H) weights, (3H,) biases)."""

    dim: int = 0
    name: str = "fuse"
    many: bool = True

    def to_ours(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        shapes = {tuple(p.shape) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"different shapes {sorted(shapes)} cannot be fused")
        return torch.cat(list(parts), dim=self.dim)

    def to_hf(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        if tensor.shape[self.dim] % count:
            raise ValueError(f"shape {tuple(tensor.shape)} does not split into {count} equal parts on dim {self.dim}")
        return list(tensor.chunk(count, dim=self.dim))


@dataclass(frozen=True)
class SplitHeads:
    """HF keeps heads as two trailing dims (..., num_heads, head_size) (XLNet's (d, n, h) q/k/v/o,
    its (n, h) biases); ours flattens them to (..., num_heads * head_size). `transpose` then turns a
    2-D result into Linear's (out, in) when HF's first dim is the Linear's input (XLNet's q/k/v)."""

    num_heads: int
    transpose: bool = False
    name: str = "split_heads"
    many: bool = False

    def to_ours(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        tensor = parts[0]
        if tensor.dim() < 2 or tensor.shape[-2] != self.num_heads:
            raise ValueError(f"shape {tuple(tensor.shape)} does not end in ({self.num_heads} heads, head size)")
        flat = tensor.flatten(-2)
        if self.transpose:
            if flat.dim() != 2:
                raise ValueError(f"shape {tuple(tensor.shape)} cannot be transposed after merging heads")
            flat = flat.t()
        return flat

    def to_hf(self, tensor: torch.Tensor, count: int) -> list[torch.Tensor]:
        flat = tensor.t() if self.transpose else tensor
        if flat.shape[-1] % self.num_heads:
            raise ValueError(f"shape {tuple(tensor.shape)} does not split into {self.num_heads} heads")
        return [flat.unflatten(-1, (self.num_heads, -1))]


IDENTITY = Identity()
TRANSPOSE = Transpose()
