"""Run a family's key map (convert.rules) in either direction, accounting for every tensor.

Import: every HF tensor is consumed, explicitly dropped, or belongs to a head HF's architecture
does not use (reported, like transformers' "weights not used"); every tensor of ours is filled;
shapes must agree. Export: every tensor of ours gets an HF name. Any miss names the tensor.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch

from lmforge.convert.rules import HEAD, KeyMap, Rule, Rules
from lmforge.convert.transforms import Transform


class ConversionError(ValueError):
    """A tensor that cannot be placed: missing, unexpected or of the wrong shape."""


@dataclass(frozen=True)
class Entry:
    """One rule for one concrete model: layer ranges and the head name filled in."""

    hf: tuple[str, ...]
    ours: str
    transform: Transform
    optional: bool
    backbone: bool  # written under HF's base-model prefix by head models

    @property
    def source(self) -> str:
        return " + ".join(self.hf)


@dataclass
class CompiledMap:
    entries: list[Entry] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    unused_heads: set[str] = field(default_factory=set)  # HF names of the family's other heads

    def backbone_names(self) -> set[str]:
        return {name for e in self.entries if e.backbone for name in e.hf}


def _indices(rule: Rule, ranges: Mapping[str, int]) -> list[dict[str, int]]:
    """Every assignment of the rule's layer ranges (`at` pins one range to one index)."""
    names = sorted(rule.ranges)
    unknown = [n for n in names if n not in ranges]
    if unknown:
        raise ConversionError(f"rule {rule.hf[0]} names layer ranges {unknown}; this model has {sorted(ranges)}")
    choices = []
    for name in names:
        count = ranges[name]
        if name in rule.at:  # negative counts from the end; a model without that layer has no tensor
            index = rule.at[name] + count if rule.at[name] < 0 else rule.at[name]
            choices.append([index] if 0 <= index < count else [])
        else:
            choices.append(list(range(count)))
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def _expand(rules: Rules, ranges: Mapping[str, int], head: str | None, backbone: bool,
            out: CompiledMap) -> None:
    for rule in rules:
        for values in _indices(rule, ranges):
            hf = tuple(t.format(**values) for t in rule.hf)
            if rule.ours is None:
                out.dropped.update(hf)
                continue
            ours = rule.ours.format(**values, **({HEAD: head} if head is not None else {}))
            out.entries.append(Entry(hf, ours, rule.transform, rule.optional, backbone))


def compile_map(key_map: KeyMap, ranges: Mapping[str, int], heads: Mapping[str, str],
                params: Collection[str] | None = None) -> CompiledMap:
    """The map for one model: `ranges` counts each layer range ({"layer": 12}), `heads` maps each
    of our head names to its kind, `params` (our state-dict names) checks that every rule that is
    not optional finds its tensor."""
    out = CompiledMap()
    _expand(key_map.backbone, ranges, None, True, out)
    for name, kind in heads.items():
        if kind not in key_map.heads:
            raise ConversionError(f"head {name!r} of kind {kind!r} has no HF counterpart in this family "
                                  f"(HF heads: {', '.join(key_map.heads)})")
        _expand(key_map.heads[kind], ranges, name, False, out)
    used = {n for e in out.entries for n in e.hf}
    for kind, rules in key_map.heads.items():
        if kind not in set(heads.values()):
            other = CompiledMap()
            _expand(rules, ranges, kind, False, other)
            out.unused_heads.update(n for e in other.entries for n in e.hf if n not in used)
    if params is not None:
        lacking = sorted({e.ours for e in out.entries if not e.optional and e.ours not in params})
        if lacking:
            raise ConversionError(f"the key map expects tensors this model does not have: {lacking}")
    return out


@dataclass
class _Import:
    """The state of one import: what was read, from where, and what went wrong."""

    ours: dict[str, torch.Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)
    tied_copies: dict[str, tuple[str, torch.Tensor]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def read(self, entry: Entry, state: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        present = [p for p in entry.hf if p in state]
        if not present:
            return None
        self.consumed.update(present)
        if len(present) != len(entry.hf):
            self.problems.append(f"{entry.ours} needs {list(entry.hf)}; missing {sorted(set(entry.hf) - set(present))}")
            return None
        try:
            return entry.transform.to_ours([state[p] for p in entry.hf])
        except ValueError as err:
            self.problems.append(f"{entry.source}: {err} (for {entry.ours})")
            return None

    def place(self, entry: Entry, tensor: torch.Tensor, tied: Mapping[str, str]) -> None:
        target = entry.ours
        if target in tied:  # the decoder shares the token embedding; HF stores a copy or nothing
            self.tied_copies[tied[target]] = (entry.source, tensor)
        elif target in self.ours:  # an alias of a tensor already read (HF's tied MLM decoder bias)
            if self.ours[target].shape != tensor.shape or not torch.equal(self.ours[target], tensor):
                self.problems.append(f"{entry.source} and {self.origin[target]} should be the same tensor "
                                     f"({target}) but differ")
        else:
            self.ours[target] = tensor.contiguous()
            self.origin[target] = entry.source

    def fill_tied(self) -> None:
        for partner, (source, tensor) in self.tied_copies.items():
            if partner not in self.ours:  # some files keep only the decoder's name for the tied pair
                self.ours[partner] = tensor.contiguous()
                self.origin[partner] = source


def hf_to_ours(state: dict[str, torch.Tensor], cmap: CompiledMap, expected: dict[str, torch.Size],
               tied: dict[str, str], source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Our state dict from an HF one (base prefix already stripped). `tied` maps each of our tied
    names to the name it shares storage with (decoder -> token embedding). Returns the state and
    the names of HF tensors dropped because they belong to heads this architecture does not have."""
    run = _Import()
    for entry in cmap.entries:
        tensor = run.read(entry, state)
        if tensor is not None:
            run.place(entry, tensor, tied)
    run.fill_tied()
    ours, problems = run.ours, run.problems
    dropped_heads = sorted(k for k in state if k in cmap.unused_heads)
    unexpected = sorted(set(state) - run.consumed - cmap.dropped - set(dropped_heads))
    if unexpected:
        problems.append(f"unexpected tensors (no place in lmforge's model): {unexpected}")
    for target in sorted(set(ours) - set(expected)):
        problems.append(f"{run.origin[target]} maps to {target}, which this model does not have")
    for target in sorted(set(expected) - set(ours) - set(tied)):
        wanted = next((e.hf[0] for e in cmap.entries if e.ours == target), "?")
        problems.append(f"missing tensor {wanted} (for {target})")
    for target in sorted(set(ours) & set(expected)):
        if ours[target].shape != expected[target]:
            problems.append(f"{run.origin[target]}: shape {tuple(ours[target].shape)} does not fit {target} "
                            f"{tuple(expected[target])}")
    if problems:
        raise ConversionError(f"{source}: " + "; ".join(problems))
    return ours, dropped_heads


def ours_to_hf(state: dict[str, torch.Tensor], cmap: CompiledMap, source: str) -> dict[str, torch.Tensor]:
    """An HF state dict (without base prefix) from ours; `state` excludes tied duplicates."""
    hf_state: dict[str, torch.Tensor] = {}
    written: set[str] = set()
    for entry in cmap.entries:
        if entry.ours not in state or entry.ours in written:
            continue  # not in this model, tied, or an alias whose first name was written
        try:
            parts = entry.transform.to_hf(state[entry.ours], len(entry.hf))
        except ValueError as err:
            raise ConversionError(f"{source}: {entry.ours}: {err} (for {entry.source})") from None
        for name, tensor in zip(entry.hf, parts):
            hf_state[name] = tensor.contiguous()
        written.add(entry.ours)
    left = sorted(set(state) - written)
    if left:
        raise ConversionError(f"{source}: no HF name for tensors {left}")
    return hf_state
