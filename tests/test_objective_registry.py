"""The objective registry: unknown kinds, settings composed into one config block, and every
registered objective building a model and a batch from a tiny prepared corpus end to end."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch
from pretrain_toy import tiny_overrides
from test_objectives import _corpus, _train_tokenizer

from lmforge.data.prepare import PrepareConfig, prepare
from lmforge.data.pretraining import ObjectiveConfig, PretrainingDataset
from lmforge.objectives import registry
from lmforge.objectives.registry import OBJECTIVES, make_objective
from lmforge.train.config import load_config
from lmforge.train.models import build_pretraining_model
from lmforge.train.trainer import Counts, head_counts, metrics_from_counts, output_heads

# the metric names README, run_summary and the trainer tests read (without the train_/eval_ prefix)
METRICS = {
    "bilm": {"lm_accuracy", "lm_forward_loss", "forward_perplexity", "lm_backward_loss", "backward_perplexity"},
    "mlm": {"mlm_loss", "mlm_accuracy", "mlm_perplexity"},
    "mlm_nsp": {"mlm_loss", "mlm_accuracy", "mlm_perplexity", "nsp_accuracy"},
    "mlm_sop": {"mlm_loss", "mlm_accuracy", "mlm_perplexity", "sop_accuracy"},
    "electra": {"mlm_loss", "mlm_accuracy", "mlm_perplexity", "rtd_accuracy"},
    "clm": {"lm_loss", "lm_accuracy", "perplexity"},
    "distill": {"mlm_loss", "mlm_accuracy", "mlm_perplexity"},
    "tinybert": {"mlm_loss", "mlm_accuracy", "mlm_perplexity"},
    "span_corruption": {"lm_loss", "lm_accuracy", "lm_perplexity"},
    "translation": {"seq2seq_lm_loss", "seq2seq_lm_accuracy"},  # no perplexity of a label-smoothed loss
}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    docs = _corpus(n_docs=12)
    (root / "tok").mkdir()
    _train_tokenizer("wordpiece", docs).save(str(root / "tok" / "tokenizer.json"))
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in docs) + "\n")
    prepare(PrepareConfig(tokenizer=str(root / "tok"), inputs=[str(corpus)], out=str(root / "out"), progress=False))
    return root / "out"


@pytest.fixture(scope="module")
def prepared_t5(tmp_path_factory):
    """The same documents with a T5 tokenizer (its </s> and the sentinels span corruption needs)."""
    from lmforge.tokenizers import train_tokenizer

    root = tmp_path_factory.mktemp("registry_t5")
    corpus = root / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(d) for d in _corpus(n_docs=12)) + "\n")
    (root / "tok").mkdir()
    train_tokenizer("unigram", [corpus], 300, family="t5", min_frequency=1).save(str(root / "tok" / "tokenizer.json"))
    prepare(PrepareConfig(tokenizer=str(root / "tok"), inputs=[str(corpus)], out=str(root / "out"), progress=False))
    return root / "out"


@pytest.fixture(scope="module")
def parallel(prepared, tmp_path_factory):
    """Sentence pairs prepared with the same tokenizer, each side 16-31 tokens with its end token, so that
    with max_seq_len = max_tokens = 32 every token-budget batch (one translation example) is one pair."""
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("parallel")
    tok = Tokenizer.from_file(str(prepared / "tokenizer" / "tokenizer.json"))
    sents = [s for d in _corpus(n_docs=60, seed=3) for s in d]
    sents = [s for s in sents if 16 <= len(tok.encode(s, add_special_tokens=False).ids) + 1 <= 31]
    (root / "src.txt").write_text("\n".join(sents[0::2][:40]) + "\n")
    (root / "tgt.txt").write_text("\n".join(sents[1::2][:40]) + "\n")
    prepare(PrepareConfig(tokenizer=str(prepared / "tokenizer"), inputs=[str(root / "src.txt"), str(root / "tgt.txt")],
                          out=str(root / "out"), format="parallel", progress=False))
    return root / "out"


def test_unknown_kind_is_an_error_listing_the_registered_ones():
    registered = ", ".join(OBJECTIVES)
    with pytest.raises(ValueError, match=f"unknown objective kind 'span_xyz'; registered: {registered}"):
        ObjectiveConfig(kind="span_xyz")
    with pytest.raises(ValueError, match="registered: mlm"):
        load_config(None, ["objective.kind=span_xyz"])
    assert set(OBJECTIVES) >= {"mlm", "mlm_nsp", "mlm_sop", "electra", "clm"}


def test_config_block_holds_every_objectives_settings_and_refuses_bad_ones():
    fields = {f.name for f in dataclasses.fields(ObjectiveConfig)}
    for cls in OBJECTIVES.values():
        assert {f.name for f in dataclasses.fields(cls.Settings)} <= fields
    objective = make_objective(ObjectiveConfig(kind="mlm_sop", max_seq_len=32, short_seq_prob=0.3))
    assert (objective.kind, objective.max_seq_len, objective.settings.short_seq_prob) == ("mlm_sop", 32, 0.3)
    with pytest.raises(ValueError, match="electra.generator_size"):
        load_config(None, ["electra.generator_size=0"])
    with pytest.raises(ValueError, match="probabilities"):
        load_config(None, ["objective.next_sentence_prob=1.5"])


def test_a_setting_declared_twice_differently_is_refused(monkeypatch):
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Other:
        mlm_probability: float = 0.3  # clashes with MaskingSettings' 0.15

    class Clash:
        kind: ClassVar[str] = "clash"
        Settings: ClassVar[type] = Other

    monkeypatch.setitem(OBJECTIVES, "clash", Clash)
    with pytest.raises(TypeError, match="mlm_probability"):
        registry._settings_fields()


def test_mismatched_model_is_refused_naming_the_preset(tmp_path):
    with pytest.raises(ValueError, match="'bert-tiny'.*causal"):
        build_pretraining_model(load_config(None, ["objective.kind=clm", "model.preset=bert-tiny"]), 100, 0)
    with pytest.raises(ValueError, match="encoder"):
        build_pretraining_model(load_config(None, ["objective.kind=mlm", "model.preset=gpt2-mini"]), 100, 0)
    with pytest.raises(ValueError, match="two segments"):
        build_pretraining_model(load_config(None, ["objective.kind=mlm_nsp", "model.overrides.type_vocab_size=1"]),
                                100, 0)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        build_pretraining_model(load_config(None, ["objective.max_seq_len=64",
                                                   "model.overrides.max_position_embeddings=32"]), 100, 0)


def _config(kind: str, prepared, tmp_path, teacher=None):
    """The trainer tests' tiny model for the objective, on the prepared corpus (distillation: from
    a 2-layer teacher of the same widths)."""
    return load_config(None, tiny_overrides(kind, str(tmp_path), **{
        "objective.max_seq_len": "32", "model.overrides.max_position_embeddings": "40",
        "model.overrides.num_layers": "1", "data.prepared_dir": str(prepared),
        **({"distill.teacher": str(teacher)} if teacher is not None else {})}))


@pytest.fixture(scope="module")
def teacher(prepared, tmp_path_factory):
    from distill_toy import tiny_teacher

    vocab = PretrainingDataset(prepared, ObjectiveConfig(kind="mlm", max_seq_len=32)).vocab_size
    return tiny_teacher(tmp_path_factory.mktemp("teacher"), vocab_size=vocab, max_position_embeddings=40)


@pytest.mark.parametrize("kind", sorted(OBJECTIVES))
def test_each_registered_objective_builds_a_model_and_a_batch(kind, prepared, prepared_t5, parallel, teacher,
                                                              tmp_path):
    if kind == "span_corruption":
        prepared = prepared_t5
    if kind == "translation":  # sentence pairs, not documents
        prepared = parallel
    config = _config(kind, prepared, tmp_path, teacher if getattr(OBJECTIVES[kind], "needs_teacher", False) else None)
    data = PretrainingDataset(prepared, config.objective, seed=1)
    assert len(data) > 4
    batch = data.collate([data[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= 32
    assert all(v.dtype == torch.long for v in batch.values())
    torch.manual_seed(0)
    module, models = build_pretraining_model(config, data.vocab_size, data.special.pad)
    out = module(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    # the token input: an embedding table, or ELMo's character CNN; TinyBERT's projections have neither
    inputs = {name: m.backbone.embeddings.tok if hasattr(m.backbone, "embeddings")
              else getattr(m.backbone, "token_encoder", None) for name, m in models.items()}
    assert any(t is not None for t in inputs.values())
    assert all(p.grad is not None for t in inputs.values() if t is not None for p in t.parameters())
    assert all(p.grad is not None for name, m in models.items() if inputs[name] is None for p in m.parameters())
    heads = output_heads(models)
    counts = Counts()
    head_counts(counts, out.heads, heads)
    metrics = metrics_from_counts(counts.sums, "", heads)
    if kind in METRICS:
        assert set(metrics) == METRICS[kind]
    assert metrics and all(v >= 0 for v in metrics.values())


def test_init_from_checks_the_source_model_with_the_objective(tmp_path):
    """Continued pre-training refuses through the same objective checks as a fresh model."""
    from lmforge.config import ModelConfig
    from lmforge.models import TaskModel, save_model
    from lmforge.pretrain import init_from_pretrained

    small = dict(vocab_size=60, hidden_size=16, num_heads=2, num_layers=1, intermediate_size=32,
                 max_position_embeddings=24)
    save_model(TaskModel(ModelConfig.from_name("bert-tiny", **small), {"mlm": {"kind": "mlm"}}), tmp_path / "bert")
    save_model(TaskModel(ModelConfig.from_name("roberta-base", **small, type_vocab_size=1)), tmp_path / "roberta")

    def init(source: str, *overrides: str):
        config = load_config(None, [f"model.init_from={tmp_path / source}", "objective.max_seq_len=16", *overrides])
        return init_from_pretrained(config, 60)

    assert set(init("bert", "objective.kind=mlm_nsp").heads) == {"mlm", "nsp"}
    with pytest.raises(ValueError, match="init_from=.*objective clm needs a causal model"):
        init("bert", "objective.kind=clm")
    with pytest.raises(ValueError, match="init_from=.*two segments"):
        init("roberta", "objective.kind=mlm_sop")
    with pytest.raises(ValueError, match="init_from=.*positions"):
        init("bert", "objective.max_seq_len=32")
    with pytest.raises(ValueError, match="electra trains its own composite model"):
        init("bert", "objective.kind=electra")


def test_a_distillation_teacher_with_another_tokenizer_is_refused(prepared, teacher, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(teacher, other)
    _train_tokenizer("wordpiece", _corpus(n_docs=12, seed=5)).save(str(other / "tokenizer.json"))
    config = load_config(None, tiny_overrides("distill", str(tmp_path / "run"), **{
        "distill.teacher": str(other), "data.prepared_dir": str(prepared), "model.overrides.num_layers": "1",
        "model.overrides.max_position_embeddings": "40"}))
    with pytest.raises(ValueError, match="distill.teacher=.*not the tokenizer"):
        build_pretraining_model(config, 40, 0)
    shutil.copy(prepared / "tokenizer" / "tokenizer.json", other / "tokenizer.json")  # the data's own: accepted
    build_pretraining_model(config, 40, 0)
