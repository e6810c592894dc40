"""ELECTRA replaced-token detection (Clark et al. 2020): a small MLM generator corrupts the input,
a discriminator learns which tokens were replaced.

- §2: the generator is trained with MLM; at masked positions its prediction is *sampled* to build
  the corrupted input (no gradient flows through the sampling); the discriminator's target is
  "replaced" (corrupted token != original token); loss = L_MLM + λ L_Disc with λ = 50.
- §3.2: generator and discriminator share the token and position (and segment) embeddings;
  the generator is smaller (1/4-1/2 of the discriminator's width works best).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.heads import IGNORE
from lmforge.models import TaskModel
from lmforge.models.task_model import ModelOutput
from lmforge.objectives.mlm import MaskedLM

if TYPE_CHECKING:
    from lmforge.train.config import PretrainConfig

SHARED_EMBEDDINGS = ("tok", "pos", "seg", "norm")


@dataclass(kw_only=True)
class ElectraSettings:
    """The `electra:` config block. §3.2 / Table 6: the generator is the discriminator scaled down
    (hidden, FFN, heads)."""

    generator_size: float = 0.25  # 1/4 for Small and Large, 1/3 for Base (Table 6)
    disc_weight: float = 50.0  # λ in L_MLM + λ L_Disc (§2)
    generator_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 < self.generator_size <= 1.0:
            raise ValueError(f"electra.generator_size {self.generator_size} must be in (0, 1]")


@dataclass(frozen=True)
class Electra(MaskedLM):
    """The generator's MLM examples (full sentences, 15% masked); the model is `ElectraModel`."""

    kind: ClassVar[str] = "electra"
    heads: ClassVar[dict[str, dict[str, Any]]] = {}  # ElectraModel builds the generator's mlm and the rtd head

    def build_model(self, model: ModelConfig, run: PretrainConfig) -> tuple[nn.Module, dict[str, TaskModel]]:
        settings = run.electra
        generator = generator_config(model, settings.generator_size, **settings.generator_overrides)
        electra = ElectraModel(model, generator, settings.disc_weight)
        return electra, electra.submodels()


def generator_config(discriminator: ModelConfig, size: float, **overrides: Any) -> ModelConfig:
    """Scale hidden size, FFN size and head count by `size` (ELECTRA Table 6 "Generator Size");
    the embedding size stays the discriminator's so the embeddings can be shared."""
    heads = max(1, round(discriminator.num_heads * size))
    head_dim = max(1, round(discriminator.hidden_size * size / heads))
    fields = dict(
        hidden_size=heads * head_dim,
        num_heads=heads,
        intermediate_size=max(1, round(discriminator.intermediate_size * size)),
        embedding_size=discriminator.embedding_size,
        num_layer_groups=0,
        pooler=False,  # the generator only has an MLM head; no classifier reads a pooler
        classifier_style="first_mlp",
        multiple_choice_style=None,
    )
    data = {**dataclasses.asdict(discriminator), **fields, **overrides}
    data["num_layer_groups"] = data["num_layer_groups"] or data["num_layers"]
    return ModelConfig.from_dict(data)


class ElectraModel(nn.Module):
    """Generator (MLM head) + discriminator (rtd head) trained jointly; the discriminator is the
    model kept after pre-training."""

    def __init__(self, discriminator: ModelConfig, generator: ModelConfig, disc_weight: float = 50.0) -> None:
        super().__init__()
        if generator.embedding_size != discriminator.embedding_size or generator.vocab_size != discriminator.vocab_size:
            raise ValueError("ELECTRA generator and discriminator must have the same embedding and vocab size "
                             "to share embeddings (§3.2)")
        self.disc_weight = disc_weight
        self.discriminator = TaskModel(discriminator, {"rtd": {"kind": "rtd"}})
        self.generator = TaskModel(generator, {"mlm": {"kind": "mlm", "fused_loss": False}})  # sampled from
        disc_emb, gen_emb = self.discriminator.backbone.embeddings, self.generator.backbone.embeddings
        for name in SHARED_EMBEDDINGS:  # the generator's own projection to its width stays separate
            setattr(gen_emb, name, getattr(disc_emb, name))
        mlm = self.generator.heads["mlm"]
        if generator.tie_word_embeddings:
            mlm.decoder.weight = disc_emb.tok.weight  # re-tie to the now shared table

    def submodels(self) -> dict[str, TaskModel]:
        """Saved sub-directories: the discriminator is the model, the generator sits beside it."""
        return {"": self.discriminator, "generator": self.generator}

    @staticmethod
    def sample(logits: torch.Tensor) -> torch.Tensor:
        """Draw one token per row from softmax(logits) with the Gumbel-max trick."""
        uniform = torch.rand_like(logits, dtype=torch.float32).clamp_(1e-9, 1.0 - 1e-9)
        gumbel = -torch.log(-torch.log(uniform))
        return (logits.float() + gumbel).argmax(dim=-1)  # (N,)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, mlm_labels: torch.Tensor | None = None,
                **_: Any) -> ModelOutput:
        if mlm_labels is None:
            raise ValueError("ELECTRA needs mlm_labels (the masked positions) in the batch")
        gen = self.generator(input_ids, attention_mask, token_type_ids, mlm_labels=mlm_labels).heads["mlm"]
        selected = mlm_labels.ne(IGNORE)  # (B, T)
        original = torch.where(selected, mlm_labels, input_ids)
        with torch.no_grad():
            corrupted = input_ids.clone()
            corrupted[selected] = self.sample(gen.logits.detach()).to(input_ids.dtype)
            rtd_labels = corrupted.ne(original).long()  # 1 = replaced
            if attention_mask is not None:
                rtd_labels = rtd_labels.masked_fill(attention_mask.eq(0), IGNORE)  # real tokens only
        disc = self.discriminator(corrupted, attention_mask, token_type_ids, rtd_labels=rtd_labels)
        rtd = disc.heads["rtd"]
        loss = gen.loss + self.disc_weight * rtd.loss
        return ModelOutput(backbone=disc.backbone, heads={"mlm": gen, "rtd": rtd}, loss=loss)
