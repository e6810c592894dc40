"""Shared by the beam-search tests of decoder-only (test_generate) and encoder-decoder (test_marian) models."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from lmforge.generate import GenerationConfig, Stepper


def eos_that_drops_a_prompt(monkeypatch, run: Callable[[GenerationConfig], list[list[int]]],
                            config: GenerationConfig, candidates: Iterable[int]) -> tuple[int, list[list[int]], int]:
    """The first EOS of `candidates` with which beam search drops a finished prompt from the batch while
    others go on: (that EOS, the output with it, the rows left after the first drop)."""
    rows_after_drop: list[int] = []
    reorder = Stepper.reorder

    def spy(self, index, *, across_sources=False):
        if across_sources:
            rows_after_drop.append(index.shape[0])
        reorder(self, index, across_sources=across_sources)

    monkeypatch.setattr(Stepper, "reorder", spy)
    for eos in candidates:
        rows_after_drop.clear()
        tokens = run(dataclasses.replace(config, eos_token_id=eos))
        if rows_after_drop:
            return eos, tokens, rows_after_drop[0]
    raise AssertionError("no EOS candidate ends one prompt's search before the others")
