"""What lmforge knows about one HF model family, in one object: an `Adapter`.

HF spreads one architecture over per-family field names (`n_embd` vs `hidden_size` vs `dim`),
per-family hard-coded choices (RoBERTa's MLM head always uses GELU, DistilBERT's LayerNorm eps is
fixed at 1e-12) and per-family tensor names. Each family module in `convert.families` states all
of it — model_type, class names, config both ways with the checks that make a field we cannot
represent an error (never a silently different model), head styles and key-map rules — so the
shared code (hf_config, api) never branches on the family.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lmforge.config import ModelConfig
from lmforge.convert.rules import KeyMap

HeadSpecs = dict[str, dict[str, Any]]

# HF activation names -> ours, for the families whose "gelu" is the exact erf GELU (OpenAI GPT's
# and DistilBERT's tables live in their modules)
ACT_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
ACT_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


class ConfigError(ValueError):
    """A config we cannot represent exactly."""


@dataclass(frozen=True)
class HFSource:
    """An HF config being read: the dict, where it came from (for messages), the head kinds its
    architecture carries, and the checkpoint's tensor names (prefix stripped) when known."""

    hf: dict[str, Any]
    where: str
    kinds: tuple[str, ...] = ()
    state_keys: set[str] | None = None

    def act(self, table: Mapping[str, str], key: str, default: str) -> str:
        return act(table, self.hf.get(key, default), self.where)

    def reject(self, **bad: tuple[Any, ...]) -> None:
        reject(self.hf, self.where, **bad)


def act(table: Mapping[str, str], name: Any, where: str) -> str:
    if name not in table:
        raise ConfigError(f"{where}: activation {name!r} is not supported (supported: {sorted(table)})")
    return table[name]


def reject(hf: dict[str, Any], where: str, **bad: tuple[Any, ...]) -> None:
    """Error if any HF field has a value (other than its default, listed first) we cannot represent."""
    for key, allowed in bad.items():
        value = hf.get(key, allowed[0])
        if value not in allowed:
            raise ConfigError(f"{where}: {key}={value!r} is not supported (lmforge builds {key}={allowed[0]!r})")


def require(config: ModelConfig, **expected: Any) -> None:
    """HF hard-codes these per family; an lmforge model that differs has no HF equivalent."""
    for key, value in expected.items():
        if getattr(config, key) != value:
            raise ConfigError(f"{config.family} in HF requires {key}={value!r}; this model has "
                              f"{key}={getattr(config, key)!r}")


def optional_float(hf: dict[str, Any], key: str, ours: str) -> dict[str, float]:
    """{ours: float(hf[key])} when HF sets it (None means "use the default")."""
    return {ours: float(hf[key])} if hf.get(key) is not None else {}


def stack_ranges(config: ModelConfig) -> dict[str, int]:
    """One stack of distinct blocks, `{layer}` (ALBERT: its layer groups)."""
    return {"layer": config.num_blocks}


def _no_head_checks(config: ModelConfig, heads: HeadSpecs) -> None:
    return None


@dataclass(frozen=True)
class Adapter:
    """One HF family. `architectures` maps a class-name suffix to the head kinds it carries;
    `encoder_architectures` the same for the encoder alone of an encoder-decoder family (T5EncoderModel),
    chosen on export when the model has no decoder layers; `unsupported` the suffixes HF has that lmforge
    refuses, with the reason; `head_styles` how HF's head of a kind reads the sequence ("pooler",
    "first_mlp", "last_token")."""

    model_type: str
    family: str
    class_prefix: str
    base_prefix: str  # the attribute holding the backbone in HF head models
    preset: str  # the lmforge preset a config read from HF starts from
    architectures: Mapping[str, tuple[str, ...]]
    rules: KeyMap | Callable[[ModelConfig], KeyMap]  # a function when rules depend on sizes (SplitHeads)
    from_hf: Callable[[HFSource], dict[str, Any]]  # ModelConfig fields
    to_hf: Callable[[ModelConfig], dict[str, Any]]  # the family's config.json fields
    check_exportable: Callable[[ModelConfig], None]
    encoder_architectures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unsupported: Mapping[str, str] = field(default_factory=dict)
    head_styles: Mapping[str, str] = field(default_factory=dict)
    check_heads: Callable[[ModelConfig, HeadSpecs], None] = _no_head_checks
    ranges: Callable[[ModelConfig], dict[str, int]] = stack_ranges

    def key_map(self, config: ModelConfig) -> KeyMap:
        return self.rules(config) if callable(self.rules) else self.rules

    def architecture(self, hf: dict[str, Any], where: str) -> tuple[str, tuple[str, ...]]:
        """The HF class named by `architectures` and the head kinds it carries."""
        archs = hf.get("architectures") or [self.class_prefix + "Model"]
        if len(archs) != 1:
            raise ConfigError(f"{where}: expected one entry in 'architectures', got {archs}")
        arch = archs[0]
        if not arch.startswith(self.class_prefix):
            raise ConfigError(f"{where}: architecture {arch!r} does not belong to model_type {self.model_type!r}")
        suffix = arch[len(self.class_prefix):]
        known = {**self.architectures, **self.encoder_architectures}
        if suffix in known:
            return arch, known[suffix]
        if suffix in self.unsupported:
            raise ConfigError(f"{where}: {arch} is not supported: {self.unsupported[suffix]}")
        raise ConfigError(f"{where}: unknown architecture {arch!r}; supported for {self.family}: "
                          + ", ".join(self.class_prefix + s for s in known))

    def architecture_for(self, kinds: tuple[str, ...], config: ModelConfig | None = None) -> str:
        """The HF class for a model with heads of these kinds (and, given its config, for the encoder
        alone when the family has encoder-only classes and the model no decoder)."""
        table = self.architectures
        if self.encoder_architectures and config is not None and not config.num_decoder_layers:
            table = self.encoder_architectures
        for suffix, arch_kinds in table.items():
            if sorted(arch_kinds) == sorted(kinds):
                return self.class_prefix + suffix
        raise ConfigError(f"heads {sorted(kinds)} have no HF {self.family} architecture; HF has "
                          + ", ".join(f"{self.class_prefix}{s} {list(k)}" for s, k in table.items()))
