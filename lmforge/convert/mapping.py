"""Run a family's key map in either direction, accounting for every tensor.

Import: every HF tensor is consumed, explicitly dropped, or belongs to a head HF's architecture
does not use (reported, like transformers' "weights not used"); every tensor of ours is filled;
shapes must agree. Export: every tensor of ours gets an HF name. Any miss names the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmforge.convert.keymaps import FamilyMap


class ConversionError(ValueError):
    """A tensor that cannot be placed: missing, unexpected or of the wrong shape."""


@dataclass
class CompiledMap:
    """A family map with `{}` and `{head}` expanded for one concrete model."""

    renames: dict[str, str] = field(default_factory=dict)  # HF name -> ours (aliases share a target)
    fused: dict[str, list[str]] = field(default_factory=dict)  # ours -> HF q, k, v names
    transposed: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)
    unused_heads: set[str] = field(default_factory=set)  # HF names of the family's other heads


def _expand(template: str, blocks: int) -> list[tuple[str, int | None]]:
    if "{}" in template:
        return [(template.replace("{}", str(i)), i) for i in range(blocks)]
    return [(template, None)]


def _fill(template: str, index: int | None, head: str | None = None) -> str:
    if head is not None:
        template = template.replace("{head}", head)
    return template.replace("{}", str(index)) if index is not None else template


def compile_map(fmap: FamilyMap, blocks: int, heads: dict[str, str]) -> CompiledMap:
    """`heads` maps each of our head names to its kind."""
    out = CompiledMap()
    for hf_t, ours_t in fmap.backbone.items():
        for hf, i in _expand(hf_t, blocks):
            if ours_t is None:
                out.dropped.add(hf)
            else:
                out.renames[hf] = _fill(ours_t, i)
            if hf_t in fmap.transposed:
                out.transposed.add(hf)
    for ours_t, parts in fmap.fused.items():
        for suffix in ("weight", "bias"):
            for i in range(blocks):
                out.fused[f"{_fill(ours_t, i)}.{suffix}"] = [f"{_fill(p, i)}.{suffix}" for p in parts]
    used_kinds = set(heads.values())
    for name, kind in heads.items():
        if kind not in fmap.heads:
            raise ConversionError(f"head {name!r} of kind {kind!r} has no HF counterpart in this family "
                                  f"(HF heads: {', '.join(fmap.heads)})")
        for hf, ours_t in fmap.heads[kind].items():
            out.renames[hf] = _fill(ours_t, None, head=name)
    for kind, kmap in fmap.heads.items():
        if kind not in used_kinds:
            out.unused_heads.update(k for k in kmap if k not in out.renames)
    return out


def hf_to_ours(state: dict[str, torch.Tensor], cmap: CompiledMap, expected: dict[str, torch.Size],
               tied: dict[str, str], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict from an HF one (base prefix already stripped). `tied` maps each of our tied
    names to the name it shares storage with (decoder -> token embedding). Returns the state and
    the names of HF tensors dropped because they belong to heads this architecture does not have."""
    ours: dict[str, torch.Tensor] = {}
    tied_copies: dict[str, tuple[str, torch.Tensor]] = {}
    origin: dict[str, str] = {}
    consumed: set[str] = set()
    problems: list[str] = []
    for target, parts in cmap.fused.items():
        present = [p for p in parts if p in state]
        if not present:
            continue
        if len(present) != len(parts):
            problems.append(f"{target} needs {parts}; missing {sorted(set(parts) - set(present))}")
            continue
        shapes = {tuple(state[p].shape) for p in parts}
        if len(shapes) != 1:
            problems.append(f"{parts} have different shapes {sorted(shapes)}; cannot fuse into {target}")
            continue
        ours[target] = torch.cat([state[p] for p in parts], dim=0)  # (3H, H) or (3H,)
        origin[target] = " + ".join(parts)
        consumed.update(parts)
    for hf, target in cmap.renames.items():
        if hf not in state:
            continue
        tensor = state[hf]
        if hf in cmap.transposed:
            tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
        consumed.add(hf)
        if target in tied:  # the decoder shares the token embedding; HF stores a copy or nothing
            tied_copies[tied[target]] = (hf, tensor)
            continue
        if target in ours:  # an alias of a tensor already read (HF's tied MLM decoder bias)
            if ours[target].shape != tensor.shape or not torch.equal(ours[target], tensor):
                problems.append(f"{hf} and {origin[target]} should be the same tensor ({target}) but differ")
            continue
        ours[target] = tensor.contiguous()
        origin[target] = hf
    for partner, (hf, tensor) in tied_copies.items():
        if partner not in ours:  # some files keep only the decoder's name for the tied pair
            ours[partner] = tensor.contiguous()
            origin[partner] = hf
    dropped_heads = sorted(k for k in state if k in cmap.unused_heads)
    unexpected = sorted(set(state) - consumed - cmap.dropped - set(dropped_heads))
    if unexpected:
        problems.append(f"unexpected tensors (no place in lmforge's model): {unexpected}")
    for target in sorted(set(ours) - set(expected)):
        problems.append(f"{origin[target]} maps to {target}, which this model does not have")
    for target in sorted(set(expected) - set(ours) - set(tied)):
        wanted = [hf for hf, t in cmap.renames.items() if t == target] or cmap.fused.get(target) or ["?"]
        problems.append(f"missing tensor {wanted[0]} (for {target})")
    for target in sorted(set(ours) & set(expected)):
        if ours[target].shape != expected[target]:
            problems.append(f"{origin[target]}: shape {tuple(ours[target].shape)} does not fit {target} "
                            f"{tuple(expected[target])}")
    if problems:
        raise ConversionError(f"{source}: " + "; ".join(problems))
    return ours, dropped_heads


def ours_to_hf(state: dict[str, torch.Tensor], cmap: CompiledMap, source: str) -> dict[str, torch.Tensor]:
    """An HF state dict (without base prefix) from ours; `state` excludes tied duplicates."""
    hf_state: dict[str, torch.Tensor] = {}
    written: set[str] = set()
    for target, parts in cmap.fused.items():
        if target in state:
            for part, chunk in zip(parts, state[target].chunk(len(parts), dim=0)):  # (3H, .) -> 3 x (H, .)
                hf_state[part] = chunk.contiguous()
            written.add(target)
    for hf, target in cmap.renames.items():
        if target not in state or target in written:
            continue  # not in this model, tied, or an alias whose first name was written
        tensor = state[target]
        hf_state[hf] = (tensor.t() if hf in cmap.transposed else tensor).contiguous()
        written.add(target)
    left = sorted(set(state) - written)
    if left:
        raise ConversionError(f"{source}: no HF name for tensors {left}")
    return hf_state

