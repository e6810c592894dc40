"""Key-map rules: which HF tensor(s) become which of ours, declared as data (run by convert.mapping).

A rule names HF tensor templates and one template of ours. Templates hold named layer ranges in
braces — `{layer}` for a single stack, `{enc}`/`{dec}` for an encoder-decoder's two stacks — that
the engine expands with each range's count; `{head}` in our template is the lmforge head's name.
Backbone HF templates are written without HF's base-model prefix (`bert.`, `transformer.` ...);
head templates are full HF names.

- `ours=None` drops the HF tensor on purpose: buffers that carry no weights (`position_ids`,
  GPT-2's causal-mask `attn.bias`).
- Several rules naming one tensor of ours are aliases of one tensor (HF ties the MLM decoder bias
  to the head's bias): on import they must agree; the first rule is the one written on export.
- `optional`: our model may lack the tensor (a bias-free Linear, a pooler HF's head class drops, a
  projection only factorised embeddings have); the HF checkpoint must then lack it too. A rule
  that is not optional must find its tensor in our model, so a rule that maps nothing is an error.
- `at` fixes a range to one index: a rule for layer 0 only (T5's relative-attention bias).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from lmforge.convert.transforms import IDENTITY, Fuse, Transform

_FIELD = re.compile(r"\{(\w*)\}")
HEAD = "head"  # the placeholder for the lmforge head's name; every other one is a layer range


def placeholders(template: str) -> set[str]:
    return set(_FIELD.findall(template))


@dataclass(frozen=True)
class Rule:
    """HF template(s) -> our template through `transform` (several HF templates only for a fuse);
    `ours=None` drops; `optional` and `at` as in the module docstring."""

    hf: tuple[str, ...]
    ours: str | None
    transform: Transform = IDENTITY
    optional: bool = False
    at: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Malformed rules fail when their family module is imported, not on some checkpoint."""
        if not self.hf or (len(self.hf) > 1) != self.transform.many:
            raise ValueError(f"rule {self.hf} -> {self.ours}: transform {self.transform.name!r} takes "
                             f"{'several' if self.transform.many else 'one'} HF tensor(s)")
        hf_ranges = [placeholders(t) for t in self.hf]
        if any(HEAD in r or "" in r for r in hf_ranges) or len({frozenset(r) for r in hf_ranges}) != 1:
            raise ValueError(f"rule {self.hf}: HF templates must name the same layer ranges (and no {{head}})")
        free = hf_ranges[0] - set(self.at)
        if set(self.at) - hf_ranges[0]:
            raise ValueError(f"rule {self.hf}: `at` names ranges {sorted(set(self.at) - hf_ranges[0])} "
                             "its templates do not have")
        ours = placeholders(self.ours) - {HEAD} if self.ours is not None else free
        if not free <= ours <= hf_ranges[0]:  # a range pinned by `at` may appear in ours or not
            raise ValueError(f"rule {self.hf} -> {self.ours}: both sides must name the same free layer ranges")

    @property
    def ranges(self) -> set[str]:
        return placeholders(self.hf[0])


Rules = tuple[Rule, ...]


@dataclass(frozen=True)
class KeyMap:
    """A family's rules: the backbone's, and per head kind the HF names of that head."""

    backbone: Rules
    heads: Mapping[str, Rules] = field(default_factory=dict)


def rename(hf: str, ours: str, transform: Transform = IDENTITY, *, optional: bool = False,
           at: Mapping[str, int] | None = None) -> Rules:
    return (Rule((hf,), ours, transform, optional, dict(at or {})),)


def drop(*hf: str) -> Rules:
    """HF tensors that carry no weights, dropped on purpose when present."""
    return tuple(Rule((name,), None, optional=True) for name in hf)


def params(hf: str, ours: str, *, bias: bool | Literal["optional"] = True, weight: Transform = IDENTITY,
           optional: bool = False) -> Rules:
    """A Linear or LayerNorm: `.weight` (through `weight`) and `.bias`. `bias=False` for bias-free
    modules, "optional" when the same family comes with and without biases."""
    rules = rename(f"{hf}.weight", f"{ours}.weight", weight, optional=optional)
    if bias:
        rules += rename(f"{hf}.bias", f"{ours}.bias", optional=optional or bias == "optional")
    return rules


def fused(ours: str, parts: tuple[str, ...], *, dim: int = 0, bias: bool | Literal["optional"] = True,
          optional: bool = False) -> Rules:
    """One Linear of ours from several of HF (q, k, v), weights and biases concatenated on `dim`."""
    suffixes = ("weight", "bias") if bias else ("weight",)
    return tuple(Rule(tuple(f"{p}.{s}" for p in parts), f"{ours}.{s}", Fuse(dim),
                      optional or (s == "bias" and bias == "optional")) for s in suffixes)
