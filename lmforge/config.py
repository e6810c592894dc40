"""Model configuration: one typed dataclass describes every encoder/decoder of the BERT/GPT family.

A family is a preset (a dict of field values), not a class: BERT, RoBERTa, ALBERT, ELECTRA and
DistilBERT are encoders that differ in embeddings, sharing and head details; GPT-1 and GPT-2 are
causal decoders that differ in where LayerNorm sits; Marian is the original encoder-decoder
Transformer (Vaswani et al. 2017) as HF's `MarianMTModel` holds it; T5 (Raffel et al. 2020) is a pre-LN
encoder-decoder with RMS norms, no biases and relative position buckets instead of absolute positions.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmforge.elmo_config import ELMO_PRESETS, ElmoConfig
from lmforge.jsonfile import load_json
from lmforge.xlnet_config import XLNET_PRESETS, XLNetConfig

if TYPE_CHECKING:
    from lmforge.nn.block import LayerSpec

Family = Literal["bert", "roberta", "albert", "electra", "distilbert", "openai-gpt", "gpt2", "marian", "t5"]
Activation = Literal["gelu", "gelu_tanh", "relu", "tanh", "silu"]
FAMILIES: tuple[str, ...] = ("bert", "roberta", "albert", "electra", "distilbert", "openai-gpt", "gpt2", "marian",
                             "t5")


@dataclass(kw_only=True)
class ModelConfig:
    """Everything needed to build a backbone; heads are described separately (see heads/)."""

    family: Family = "bert"

    # --- size ---
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 0  # 0 -> 4 * hidden_size
    embedding_size: int = 0  # 0 -> hidden_size; smaller factorizes embeddings (ALBERT §3.1, ELECTRA)
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segment embeddings; 0 = none (DistilBERT, GPT)
    num_layer_groups: int = 0  # 0 = no sharing; ALBERT shares one group across all layers (§3.1)
    num_decoder_layers: int = 0  # > 0: an encoder-decoder (Vaswani et al. §3.1); num_layers is the encoder's
    attention_head_size: int = 0  # 0 -> hidden_size // num_heads; T5 v1.1-small: 6 heads of 64 on d_model 512

    # --- layout ---
    causal: bool = False  # decoder-only LM (GPT) when True
    norm_position: Literal["post", "pre"] = "post"  # GPT-2 moved LayerNorm to the block input (§2.3)
    embedding_norm: bool = True  # LayerNorm after summing embeddings (BERT family; GPT has none)
    position_offset: int = 0  # RoBERTa: positions start at pad_token_id + 1 and follow the pad mask
    sinusoidal_positions: bool = False  # fixed sin/cos table (Vaswani et al. §3.5; DistilBERT option)
    # "interleaved": sin/cos alternate (DistilBERT, stored in its checkpoints); "halves": sin in the first
    # half of the dims, cos in the second (Marian; recomputed, never stored, as HF does)
    sinusoidal_layout: Literal["interleaved", "halves"] = "interleaved"
    scale_embeddings: bool = False  # token embeddings * sqrt(d_model) (Vaswani et al. §3.4; HF scale_embedding)
    absolute_positions: bool = True  # a position table added to the tokens; T5 has none (relative buckets only)
    # T5 (Raffel et al. §2.1): a learned scalar per head and relative-distance bucket added to the attention
    # scores, one table per stack; 0 buckets = none
    relative_attention_buckets: int = 0
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket
    norm: Literal["layer", "rms"] = "layer"  # T5: RMS norm, no mean subtraction, no bias (§2.1)
    bias: bool = True  # biases of every Linear, norm and the seq2seq vocabulary bias; T5 has none
    gated_ffn: bool = False  # gated feed-forward (Shazeer 2020; T5 v1.1's gated-GELU)
    ffn_dropout: float = 0.0  # dropout on the FFN's inner activation (T5 applies its dropout rate there)
    attention_scale: float | None = None  # None -> 1/sqrt(head size); T5: 1.0 (folded into the query init)
    output_scale: bool = False  # decoder output * d_model^-0.5 before the tied projection (T5 v1.0, Mesh TF)
    final_dropout: bool = False  # dropout after each stack's final norm (T5's reference code and HF's T5Stack)
    pooler: bool = True  # dense+tanh over the first token (BERT §3, used by NSP/SOP/classification)
    activation: Activation = "gelu"
    layer_norm_eps: float = 1e-12

    # --- heads (family defaults live here, so heads never branch on `family`) ---
    mlm_activation: Activation | None = None  # None -> activation (RoBERTa/ELECTRA heads fix gelu)
    classifier_style: Literal["pooler", "first_mlp", "last_token"] = "pooler"
    classifier_activation: Activation = "tanh"  # for first_mlp: RoBERTa tanh, ELECTRA gelu, DistilBERT relu
    multiple_choice_style: Literal["pooler", "first_mlp", "last_token"] | None = None  # None -> classifier_style
    pair_head_dropout: bool = False  # NSP/SOP head drops out the pooled vector (ALBERT's SOP head does)
    tie_word_embeddings: bool = True

    # --- regularisation and initialisation ---
    dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # None -> dropout
    initializer_range: float = 0.02
    scaled_residual_init: bool = False  # GPT-2 §2.3: residual projections scaled by 1/sqrt(2 * n_layers)
    # "fan_in": T5's (Mesh TensorFlow) init, Linear ~ N(0, fan_in^-1/2), embeddings ~ N(0, 1), queries also
    # scaled by head_size^-1/2 because T5 attention does not divide by sqrt(d) (lmforge.nn.init)
    initializer: Literal["normal", "fan_in"] = "normal"

    # --- special tokens ---
    pad_token_id: int | None = 0
    decoder_start_token_id: int | None = None  # encoder-decoders' first decoder input; None -> pad_token_id

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {FAMILIES}")
        if self.intermediate_size == 0:
            self.intermediate_size = 4 * self.hidden_size
        if self.embedding_size == 0:
            self.embedding_size = self.hidden_size
        if self.mlm_activation is None:
            self.mlm_activation = self.activation
        if self.classifier_dropout is None:
            self.classifier_dropout = self.dropout
        if not self.attention_head_size and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.num_layer_groups and (self.num_layer_groups > self.num_layers
                                      or self.num_layers % self.num_layer_groups):
            raise ValueError(
                f"num_layer_groups {self.num_layer_groups} must divide num_layers {self.num_layers}"
            )
        if self.classifier_style == "pooler" and not self.pooler:
            raise ValueError("classifier_style='pooler' needs pooler=True")
        if self.num_decoder_layers and (self.causal or self.pooler):
            raise ValueError("an encoder-decoder (num_decoder_layers > 0) takes causal=False and pooler=False: "
                             "the encoder is bidirectional, the decoder causal by construction")
        if self.sinusoidal_layout not in ("interleaved", "halves"):
            raise ValueError(f"sinusoidal_layout must be 'interleaved' or 'halves', not {self.sinusoidal_layout!r}")
        if self.position_offset and self.pad_token_id is None:
            raise ValueError("position_offset (RoBERTa positions) needs a pad_token_id")
        if self.norm not in ("layer", "rms"):
            raise ValueError(f"norm must be 'layer' or 'rms', not {self.norm!r}")
        if self.initializer not in ("normal", "fan_in"):
            raise ValueError(f"initializer must be 'normal' or 'fan_in', not {self.initializer!r}")
        if self.relative_attention_buckets < 0 or self.relative_attention_buckets % 2:
            raise ValueError(f"relative_attention_buckets must be an even number >= 0, "
                             f"got {self.relative_attention_buckets}")

    @property
    def decoder_start_id(self) -> int | None:
        """The first decoder input of an encoder-decoder: the pad token unless set (Marian and T5
        start from pad; HF's `decoder_start_token_id`)."""
        return self.pad_token_id if self.decoder_start_token_id is None else self.decoder_start_token_id

    @property
    def head_dim(self) -> int:
        return self.attention_head_size or self.hidden_size // self.num_heads

    @property
    def arch(self) -> str:
        """The backbone this config builds (lmforge.models.registry)."""
        return "encoder-decoder" if self.num_decoder_layers else "transformer"

    def layer_spec(self) -> LayerSpec:
        """What one Transformer layer of this model is (lmforge.nn.block)."""
        from lmforge.nn.block import LayerSpec

        return LayerSpec(hidden_size=self.hidden_size, num_heads=self.num_heads,
                         intermediate_size=self.intermediate_size, activation=self.activation,
                         dropout=self.dropout, attention_dropout=self.attention_dropout,
                         norm_eps=self.layer_norm_eps, pre_norm=self.norm_position == "pre", norm=self.norm,
                         bias=self.bias, gated=self.gated_ffn, inner_dropout=self.ffn_dropout,
                         head_dim=self.attention_head_size or None, attention_scale=self.attention_scale)

    @property
    def num_blocks(self) -> int:
        """Distinct blocks: num_layers, or fewer when layers share parameters (ALBERT)."""
        return self.num_layer_groups or self.num_layers

    @property
    def num_positions(self) -> int:
        """Rows in the position table (RoBERTa's includes the offset rows)."""
        return self.max_position_embeddings

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {unknown}")
        return cls(**data)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """A preset by name (see `PRESETS`), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Presets. Family defaults first, then the official sizes and small CPU sizes on top of them.
# ---------------------------------------------------------------------------------------------
_BERT = dict(family="bert")
_ROBERTA = dict(
    family="roberta",
    vocab_size=50265,
    max_position_embeddings=514,
    type_vocab_size=1,
    position_offset=2,  # pad_token_id (1) + 1
    pad_token_id=1,
    layer_norm_eps=1e-5,
    mlm_activation="gelu",
    classifier_style="first_mlp",
    classifier_activation="tanh",
    multiple_choice_style="pooler",  # HF's RobertaForMultipleChoice keeps the pooler its classifier drops
)
_ALBERT = dict(
    family="albert",
    vocab_size=30000,
    embedding_size=128,
    num_layer_groups=1,
    activation="gelu_tanh",
    dropout=0.0,
    attention_dropout=0.0,
    classifier_dropout=0.1,
    pair_head_dropout=True,  # the SOP head drops out the pooled vector (classifier_dropout_prob)
)
_ELECTRA = dict(
    family="electra",
    pooler=False,
    mlm_activation="gelu",
    classifier_style="first_mlp",
    classifier_activation="gelu",
)
_DISTILBERT = dict(
    family="distilbert",
    num_layers=6,
    type_vocab_size=0,
    pooler=False,
    classifier_style="first_mlp",
    classifier_activation="relu",
    classifier_dropout=0.2,  # DistilBERT's seq_classif_dropout
)
_GPT1 = dict(
    family="openai-gpt",
    vocab_size=40478,
    causal=True,
    norm_position="post",
    embedding_norm=False,
    type_vocab_size=0,
    pooler=False,
    activation="gelu_tanh",
    layer_norm_eps=1e-5,
    classifier_style="last_token",
    pad_token_id=None,
)
_GPT2 = dict(
    _GPT1,
    family="gpt2",
    vocab_size=50257,
    max_position_embeddings=1024,
    norm_position="pre",
    scaled_residual_init=True,
)

# The original Transformer (Vaswani et al. 2017) in HF Marian's layout: post-LN (§3.1), ReLU FFN (§3.3),
# fixed sinusoidal positions (§3.5), token embeddings scaled by sqrt(d_model) and one table shared by
# encoder, decoder and output projection (§3.4), no embedding LayerNorm; residual and embedding dropout
# only (§5.4), no attention dropout; a shared BPE vocabulary of about 37000 tokens (§5.1).
_MARIAN = dict(
    family="marian",
    vocab_size=37000,
    num_layers=6,
    num_decoder_layers=6,
    hidden_size=512,
    num_heads=8,
    intermediate_size=2048,
    max_position_embeddings=512,
    type_vocab_size=0,
    norm_position="post",
    embedding_norm=False,
    sinusoidal_positions=True,
    sinusoidal_layout="halves",
    scale_embeddings=True,
    pooler=False,
    classifier_style="first_mlp",
    activation="relu",
    layer_norm_eps=1e-5,  # HF Marian's LayerNorms use torch's default
    dropout=0.1,
    attention_dropout=0.0,
)

# T5 (Raffel et al. 2020 §2.1, §3.1.1): pre-LN encoder-decoder, RMS norms without bias, no biases at all, no
# position table but a relative position bias (32 buckets, max distance 128), no 1/sqrt(d) attention scaling,
# dropout 0.1 everywhere (residual, attention, FFN inner); a 32k SentencePiece vocabulary (HF: 32128, the
# 100 sentinels included and padded to a multiple of 128). v1.0: ReLU FFN, output projection tied to the
# token table with the d^-0.5 output scaling. v1.1: gated-GELU FFN, untied output projection, no scaling.
_T5 = dict(
    family="t5",
    vocab_size=32128,
    num_layers=6,
    num_decoder_layers=6,
    hidden_size=512,
    num_heads=8,
    intermediate_size=2048,
    max_position_embeddings=512,  # only a length limit: T5 has no position table
    type_vocab_size=0,
    norm_position="pre",
    embedding_norm=False,
    absolute_positions=False,
    relative_attention_buckets=32,
    relative_attention_max_distance=128,
    norm="rms",
    bias=False,
    attention_scale=1.0,
    output_scale=True,
    pooler=False,
    classifier_style="first_mlp",
    activation="relu",
    layer_norm_eps=1e-6,
    dropout=0.1,
    attention_dropout=0.1,
    ffn_dropout=0.1,
    final_dropout=True,
    initializer="fan_in",
    initializer_range=1.0,  # T5's initializer_factor
)
# (the released v1.1 configs keep dropout 0.1; their notes pre-train without it: configs/t5.yaml sets 0)
_T5_V1_1 = dict(_T5, gated_ffn=True, activation="gelu_tanh", tie_word_embeddings=False, output_scale=False)

PRESETS: dict[str, dict[str, Any]] = {
    # BERT (Devlin et al. 2019, Table/§3.1)
    "bert-base-uncased": dict(_BERT),
    "bert-base-cased": dict(_BERT, vocab_size=28996),
    "bert-large-uncased": dict(_BERT, hidden_size=1024, num_layers=24, num_heads=16),
    "bert-large-cased": dict(_BERT, vocab_size=28996, hidden_size=1024, num_layers=24, num_heads=16),
    # small BERTs of Turc et al. 2019 ("Well-Read Students Learn Better"), sized for CPUs
    "bert-tiny": dict(_BERT, hidden_size=128, num_layers=2, num_heads=2),
    "bert-mini": dict(_BERT, hidden_size=256, num_layers=4, num_heads=4),
    "bert-small": dict(_BERT, hidden_size=512, num_layers=4, num_heads=8),
    "roberta-base": dict(_ROBERTA),
    "albert-base-v2": dict(_ALBERT),
    # ELECTRA (Clark et al. 2020, Table 6): generator is a smaller encoder sharing the embeddings
    "electra-small-discriminator": dict(_ELECTRA, embedding_size=128, hidden_size=256, num_heads=4),
    "electra-small-generator": dict(_ELECTRA, embedding_size=128, hidden_size=256, num_heads=4),
    "electra-base-discriminator": dict(_ELECTRA),
    "electra-base-generator": dict(_ELECTRA, embedding_size=768, hidden_size=256, num_heads=4),
    "distilbert-base-uncased": dict(_DISTILBERT),
    "openai-gpt": dict(_GPT1),
    "gpt2": dict(_GPT2),
    "gpt2-medium": dict(_GPT2, hidden_size=1024, num_layers=24, num_heads=16),
    "gpt2-mini": dict(_GPT2, hidden_size=256, num_layers=4, num_heads=4, max_position_embeddings=512),
    # Vaswani et al. 2017, Table 3: base N=6, d_model 512, d_ff 2048, h 8, P_drop 0.1; big N=6, d_model
    # 1024, d_ff 4096, h 16, P_drop 0.3 (EN-DE). The small size (3+3 layers, d 256) trains Multi30k on CPUs.
    "transformer-base": dict(_MARIAN),
    "transformer-big": dict(_MARIAN, hidden_size=1024, intermediate_size=4096, num_heads=16, dropout=0.3),
    "transformer-small": dict(_MARIAN, num_layers=3, num_decoder_layers=3, hidden_size=256,
                              intermediate_size=1024, num_heads=4, vocab_size=10000),
    # Raffel et al. Table 14 / §3.7: small 6+6 layers d 512, base 12+12 d 768 (d_ff 3072, 12 heads).
    # v1.1 (the released T5 v1.1 configs): small 8+8 layers d 512, 6 heads of 64, d_ff 1024; base d_ff 2048.
    "t5-small": dict(_T5),
    "t5-base": dict(_T5, num_layers=12, num_decoder_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072),
    "t5-v1_1-small": dict(_T5_V1_1, num_layers=8, num_decoder_layers=8, num_heads=6, attention_head_size=64,
                          intermediate_size=1024),
    "t5-v1_1-base": dict(_T5_V1_1, num_layers=12, num_decoder_layers=12, hidden_size=768, num_heads=12,
                         intermediate_size=2048),
    # a CPU size (v1.1 layout): 4+4 layers, d 256, 4 heads, d_ff 1024 (gated), a 16k vocabulary
    "t5-mini": dict(_T5_V1_1, num_layers=4, num_decoder_layers=4, hidden_size=256, num_heads=4,
                    intermediate_size=1024, vocab_size=16000),
}


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


# arch name -> config class; families with their own config class (XLNet, ELMo) register here
CONFIG_CLASSES: dict[str, Any] = {"transformer": ModelConfig, "encoder-decoder": ModelConfig, "elmo": ElmoConfig,
                                 "xlnet": XLNetConfig}
# every family lmforge builds, whichever config class holds it (the HF converters cover each one)
ALL_FAMILIES: tuple[str, ...] = FAMILIES + ("xlnet",)
# preset name -> the config class whose `from_name` builds it (`model.preset` of a pre-training run)
PRESET_CLASSES: dict[str, Any] = {**dict.fromkeys(PRESETS, ModelConfig), **dict.fromkeys(ELMO_PRESETS, ElmoConfig),
                                   **dict.fromkeys(XLNET_PRESETS, XLNetConfig)}


@dataclass
class CheckpointConfig:
    """What `config.json` of an lmforge model directory holds: the backbone config and its heads."""

    model: Any  # ModelConfig, or the config class registered for its arch
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: str = "lmforge"

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_FILE
        data = {"format": self.format, "arch": self.model.arch, "model": self.model.to_dict(), "heads": self.heads}
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> CheckpointConfig:
        path = Path(directory) / CONFIG_FILE
        data = load_json(path, missing="no config.json in model directory")
        if data.get("format") != "lmforge":
            raise ValueError(
                f"{path}: not an lmforge config (no \"format\": \"lmforge\"); "
                "for a HuggingFace directory use lmforge.convert.load_hf or `lmforge convert --from-hf`"
            )
        arch = data.get("arch", "transformer")  # files written before archs existed hold a Transformer
        if arch not in CONFIG_CLASSES:
            raise ValueError(f"{path}: unknown arch {arch!r}; known: {', '.join(sorted(CONFIG_CLASSES))}")
        try:
            model = CONFIG_CLASSES[arch].from_dict(data["model"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: bad model config: {err}") from None
        return cls(model=model, heads=data.get("heads", {}))


def is_lmforge_dir(directory: str | Path) -> bool:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == "lmforge"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
