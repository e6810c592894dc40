"""Backbones by architecture: a config's `arch` names the class that builds it.

A family with its own backbone (XLNet, ELMo) registers its builder here and its config class in
`lmforge.config.CONFIG_CLASSES`; TaskModel, heads, training and generation need nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from lmforge.models.backbone import Backbone
from lmforge.models.elmo import ElmoBackbone
from lmforge.models.seq2seq import EncoderDecoder
from lmforge.models.xlnet import XLNetBackbone

BACKBONES: dict[str, Callable[..., nn.Module]] = {"transformer": Backbone, "encoder-decoder": EncoderDecoder,
                                               "elmo": ElmoBackbone, "xlnet": XLNetBackbone}


def register_backbone(arch: str, builder: Callable[..., nn.Module]) -> None:
    BACKBONES[arch] = builder


def build_backbone(config: Any, init: bool = True) -> nn.Module:
    if config.arch not in BACKBONES:
        raise ValueError(f"no backbone registered for arch {config.arch!r}; known: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[config.arch](config, init=init)
