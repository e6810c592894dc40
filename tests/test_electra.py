"""ELECTRA (Clark et al. 2020): shared embeddings, sampled corruption, rtd labels, λ = 50."""

from __future__ import annotations

import pytest
import torch
from pretrain_toy import ToyPretrainingData, tiny_overrides

from lmforge.config import ModelConfig
from lmforge.heads import IGNORE
from lmforge.models import load_model
from lmforge.objectives.electra import ElectraModel, generator_config
from lmforge.pretrain import pretrain
from lmforge.train.config import load_config


def small() -> ElectraModel:
    disc = ModelConfig.from_name("electra-small-discriminator", vocab_size=50, embedding_size=16,
                                 hidden_size=32, num_heads=4, intermediate_size=64, num_layers=2)
    return ElectraModel(disc, generator_config(disc, 0.25))


def test_generator_is_scaled_down_and_shares_embeddings():
    model = small()
    gen, disc = model.generator.config, model.discriminator.config
    assert (gen.hidden_size, gen.num_heads, gen.intermediate_size) == (8, 1, 16)  # 1/4 (Table 6)
    assert gen.embedding_size == disc.embedding_size
    ge, de = model.generator.backbone.embeddings, model.discriminator.backbone.embeddings
    for name in ("tok", "pos", "seg", "norm"):
        assert getattr(ge, name) is getattr(de, name)
    assert ge.proj is not de.proj  # each projects to its own width
    assert model.generator.heads["mlm"].decoder.weight is de.tok.weight
    assert len({id(p) for p in model.parameters()}) == len(list(model.parameters()))


def test_corruption_is_sampled_and_labels_mark_replacements(monkeypatch):
    model = small()
    data = ToyPretrainingData("mlm", size=16, vocab_size=50)
    batch = data.collate([data[i] for i in range(16)])
    seen = {}
    original_forward = model.discriminator.forward

    def spy(input_ids, attention_mask=None, token_type_ids=None, **kw):
        seen["corrupted"], seen["labels"] = input_ids, kw["rtd_labels"]
        return original_forward(input_ids, attention_mask, token_type_ids, **kw)

    monkeypatch.setattr(model.discriminator, "forward", spy)
    out = model(**batch)
    selected = batch["mlm_labels"].ne(IGNORE)
    original = torch.where(selected, batch["mlm_labels"], batch["input_ids"])
    corrupted, labels = seen["corrupted"], seen["labels"]
    assert torch.equal(corrupted[~selected], batch["input_ids"][~selected])  # only masked positions change
    real = batch["attention_mask"].bool()
    assert torch.equal(labels[real], corrupted.ne(original)[real].long())
    assert labels[~real].eq(IGNORE).all()
    assert out.loss == out.heads["mlm"].loss + 50.0 * out.heads["rtd"].loss  # §2: λ = 50
    # sampling, not argmax: with the same logits, draws differ; and no gradient flows through them
    logits = torch.zeros(2000, 50)
    draws = ElectraModel.sample(logits)
    assert draws.unique().numel() > 40 and not draws.requires_grad
    peaked = torch.full((4000, 3), -10.0)
    peaked[:, 0] = 0.0
    peaked[:, 1] = torch.log(torch.tensor(1 / 3)).item()  # p(1)/p(0) = 1/3
    counts = torch.bincount(ElectraModel.sample(peaked), minlength=3).float()
    assert 0.25 < counts[1] / counts[0] < 0.42


def test_electra_pretraining_saves_discriminator_and_generator(tmp_path):
    config = load_config(None, tiny_overrides("electra", str(tmp_path / "run"), **{"schedule.max_steps": "6"}))
    result = pretrain(config, train_set=ToyPretrainingData("mlm", size=96),
                      eval_set=ToyPretrainingData("mlm", size=32, split="valid"))
    assert "eval_rtd_accuracy" in result.history[-1] and "eval_mlm_accuracy" in result.history[-1]
    disc = load_model(result.final_dir)
    gen = load_model(tmp_path / "run" / "final-generator")
    assert set(disc.heads) == {"rtd"} and set(gen.heads) == {"mlm"}
    assert torch.equal(disc.backbone.embeddings.tok.weight, gen.backbone.embeddings.tok.weight)
    assert gen.config.hidden_size < disc.config.hidden_size


@pytest.mark.parametrize("preset", ["bert-mini", "electra-small-discriminator", "roberta-base"])
def test_generator_of_any_encoder_preset_builds(preset):
    """A BERT or RoBERTa discriminator (a pooler-classifier preset) gets a generator without a pooler."""
    disc = ModelConfig.from_name(preset)
    gen = generator_config(disc, 0.25)
    assert not gen.pooler and gen.embedding_size == disc.embedding_size and gen.vocab_size == disc.vocab_size
    ElectraModel(disc.replace(num_layers=1), gen.replace(num_layers=1, num_layer_groups=1))
