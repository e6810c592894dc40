"""A key/value cache for incremental decoding, reorderable for beam search.

Self-attention keys and values are written into buffers that grow by doubling (or are sized once
with `capacity`), so a decoding step writes one position instead of concatenating the whole past.
Cross-attention keys and values depend only on the encoder output: computed once, then reused (and
reordered only when finished sources leave the batch).
The stack that owns the cache calls `advance` once per forward, after every layer has written.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

KV = tuple[torch.Tensor, torch.Tensor]


class KVCache:
    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity  # positions to allocate up front (0: grow as needed)
        self.length = 0  # self-attention positions already stored
        self._self: dict[int, KV] = {}
        self._cross: dict[int, KV] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> KV:
        """Store the new (B, nh, T, hd) keys/values of `layer`; return all of them, past included."""
        end = self.length + k.shape[2]
        buffers = self._self.get(layer)
        if buffers is None or buffers[0].shape[2] < end:
            old = 0 if buffers is None else buffers[0].shape[2]
            size = max(end, self.capacity, 2 * old)
            grown = tuple(t.new_empty(t.shape[0], t.shape[1], size, t.shape[3]) for t in (k, v))
            if buffers is not None:
                for new, past in zip(grown, buffers):
                    new[:, :, : self.length] = past[:, :, : self.length]
            buffers = self._self[layer] = grown  # type: ignore[assignment]
        buffers[0][:, :, self.length:end] = k
        buffers[1][:, :, self.length:end] = v
        return buffers[0][:, :, :end], buffers[1][:, :, :end]  # (B, nh, past + T, hd) each

    def cross(self, layer: int, compute: Callable[[], KV]) -> KV:
        """Cross-attention keys/values of `layer`, computed on first use."""
        if layer not in self._cross:
            self._cross[layer] = compute()
        return self._cross[layer]

    def advance(self, positions: int) -> None:
        self.length += positions

    def reorder(self, index: torch.Tensor, sources: torch.Tensor | None = None) -> None:
        """Beam search: row i of the self-attention cache becomes row index[i] (beams that survived).

        Only the `length` self-attention positions written so far are moved (the buffers may hold many
        more). The cross-attention keys/values depend on the source alone (one row per source, shared by
        its beams, lmforge.nn.attention), so a reorder within each source's beams leaves them as they
        are; a reorder that drops finished sources passes `sources`, the memory rows that stay."""
        rows = index.shape[0]
        if all(k.shape[0] == rows for k, _ in self._self.values()):
            # only the rows whose beam changed are rewritten: most beams continue their own history
            moved = (index != torch.arange(rows, device=index.device)).nonzero().squeeze(1)
            if moved.numel():
                origins = index[moved]
                for buffers in self._self.values():
                    for buffer in buffers:
                        buffer[moved, :, : self.length] = buffer[origins, :, : self.length]  # gathered, then written
        else:  # fewer rows (finished sources dropped): new buffers of the same capacity
            for layer, buffers in self._self.items():
                k, v = (self._selected(buffer, index) for buffer in buffers)
                self._self[layer] = (k, v)
        if sources is not None:
            for layer, (k, v) in self._cross.items():
                self._cross[layer] = (k.index_select(0, sources), v.index_select(0, sources))

    def _selected(self, buffer: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """A buffer of the same capacity holding rows `index` of `buffer`'s written positions."""
        new = buffer.new_empty(index.shape[0], *buffer.shape[1:])
        new[:, :, : self.length] = buffer[:, :, : self.length].index_select(0, index)
        return new
