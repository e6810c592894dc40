"""What the parity tests with transformers share: a tiny random HF model saved to disk, a session-wide
store for checkpoints several tests reuse, and the checks that an export round-trips.

HF zero-initialises biases and LayerNorm shifts; the models here get noise on them (and on whatever
else a test names) so a mapping that drops or swaps one shows up as a mismatch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.convert import load_hf, save_hf
from lmforge.heads import IGNORE

TOL = dict(atol=1e-5, rtol=1e-5)


def random_hf_model(cls: type[nn.Module], config: Any, *, seed: int, randomise: Callable[[str], bool],
                    scale: float = 0.1, adjust: Callable[[nn.Module], None] | None = None) -> nn.Module:
    """`cls(config)` in eval mode, seeded, with `scale` * N(0, 1) added to every parameter whose name
    `randomise` accepts; `adjust` then edits it further (no gradient recorded)."""
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if randomise(name):
                param.add_(torch.randn_like(param) * scale)
        if adjust is not None:
            adjust(model)
    return model


def saved(model: nn.Module, directory: Path) -> tuple[nn.Module, Path]:
    """The model and the directory it was saved to with `save_pretrained`."""
    model.save_pretrained(directory)
    return model, directory


class CheckpointStore:
    """Checkpoints built once per test session (many parametrised cases read the same one), saved under
    one folder that the session fixture deletes at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: dict[str, tuple[nn.Module, Path]] = {}

    def get(self, name: str, build: Callable[[], nn.Module]) -> tuple[nn.Module, Path]:
        if name not in self.built:
            self.built[name] = saved(build(), self.root / name)
        return self.built[name]


def seq2seq_batch(src_lengths: tuple[int, ...], tgt_lengths: tuple[int, ...], pad: int,
                  high: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(inputs, labels): random ids in [2, high), each row right-padded after its length; decoder inputs
    are the labels shifted right behind `pad`, as HF's seq2seq models build them; labels IGNORE on padding."""
    g = torch.Generator().manual_seed(7)
    src = torch.randint(2, high, (len(src_lengths), max(src_lengths)), generator=g)
    src_mask = (torch.arange(src.shape[1]) < torch.tensor(src_lengths)[:, None]).long()
    labels = torch.randint(2, high, (len(tgt_lengths), max(tgt_lengths)), generator=g)
    tgt_mask = (torch.arange(labels.shape[1]) < torch.tensor(tgt_lengths)[:, None]).long()
    shifted = torch.cat([torch.full((labels.shape[0], 1), pad), labels[:, :-1]], 1)
    inputs = dict(input_ids=src.masked_fill(src_mask == 0, pad), attention_mask=src_mask,
                  decoder_input_ids=shifted.masked_fill(tgt_mask == 0, pad), decoder_attention_mask=tgt_mask)
    return inputs, labels.masked_fill(tgt_mask == 0, IGNORE)


def assert_round_trip(ours: nn.Module, directory: Path) -> nn.Module:
    """lmforge -> HF (saved to `directory`) -> lmforge is bit-exact, heads included; returns the reload."""
    save_hf(ours, directory)
    again = load_hf(directory)
    before, after = ours.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert again.head_specs() == ours.head_specs()
    return again


def assert_loads_in_transformers(loader: Any, directory: Path, hf_model: nn.Module,
                                 missing_ok: Callable[[str], bool] = lambda key: False) -> nn.Module:
    """`loader.from_pretrained(directory)` finds every tensor (none missing but those `missing_ok`
    accepts, none unexpected or mis-shaped) and holds the reference model's values; returns it."""
    reloaded, info = loader.from_pretrained(directory, output_loading_info=True)
    missing = [key for key in info["missing_keys"] if not missing_ok(key)]
    assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"], info
    for key, tensor in hf_model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], tensor), key
    return reloaded


def assert_states(pairs: list[tuple[torch.Tensor, torch.Tensor]], count: int) -> None:
    """`count` pairs of (HF, ours) hidden states, equal at every position, padding included."""
    assert len(pairs) == count
    for i, (x, y) in enumerate(pairs):
        torch.testing.assert_close(y, x, **TOL, msg=lambda m, i=i: f"hidden state {i}: {m}")


def assert_seq2seq_parity(hf: nn.Module, ours: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                          states: int, lm_head: bool) -> None:
    """An encoder-decoder's `states` hidden states (both stacks) and, with `lm_head`, its logits and loss
    equal HF's on one batch."""
    with torch.no_grad():
        a = hf(**inputs, output_hidden_states=True)
        b = ours(**inputs, output_hidden_states=True)
    assert_states(list(zip(a.encoder_hidden_states, b.backbone.encoder.hidden_states))
                  + list(zip(a.decoder_hidden_states, b.backbone.hidden_states)), states)
    if not lm_head:
        return
    torch.testing.assert_close(b.heads["seq2seq_lm"].logits, a.logits, **TOL)
    with torch.no_grad():
        hf_loss = hf(**inputs, labels=labels).loss
        our_loss = ours(**inputs, labels=labels).loss
    torch.testing.assert_close(our_loss, hf_loss, **TOL)
