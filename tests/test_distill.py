"""DistilBERT general distillation (Sanh et al. 2019): the loss, the frozen teacher, the student's
initialisation from the teacher, what is saved, and the errors for teachers it cannot use."""

from __future__ import annotations

import pytest
import torch
from distill_toy import tiny_teacher
from pretrain_toy import ToyPretrainingData, tiny_overrides
from torch.nn import functional as F

from lmforge.models import TaskModel
from lmforge.models.task_model import load_model
from lmforge.objectives.distill import init_from_teacher, layer_map, load_teacher
from lmforge.objectives.registry import make_objective
from lmforge.pretrain import pretrain
from lmforge.train.config import load_config
from lmforge.train.models import build_pretraining_model
from lmforge.weights import load_weights


def distill_config(tmp_path, teacher, **extra: str):
    items = {"distill.teacher": str(teacher), "model.overrides.num_layers": "1", **extra}
    return load_config(None, tiny_overrides("distill", str(tmp_path / "run"), **items))


def build(tmp_path, teacher_layers: int = 2, **extra: str):
    teacher = tiny_teacher(tmp_path / "teacher", num_layers=teacher_layers)
    config = distill_config(tmp_path, teacher, **extra)
    return build_pretraining_model(config, 40, 0)


def batch():
    data = ToyPretrainingData("mlm", size=8)
    out = data.collate([data[i] for i in range(8)])
    out.pop("token_type_ids", None)
    return out


def test_layer_map_is_uniform_and_refuses_what_does_not_divide():
    assert layer_map(3, 6) == [0, 2, 4, 6]  # TinyBERT §4.3 g(m) = m N / M; DistilBERT "one out of two"
    assert layer_map(4, 12) == [0, 3, 6, 9, 12]
    with pytest.raises(ValueError, match="divide"):
        layer_map(4, 6)


def test_student_takes_every_other_layer_of_the_teacher(tmp_path):
    module, models = build(tmp_path, teacher_layers=4, **{"model.overrides.num_layers": "2"})
    teacher, student = module.teacher, module.student
    assert student.config.num_layers == 2
    for s, t in ((0, 0), (1, 2)):
        for (name, a), b in zip(student.backbone.layers[s].state_dict().items(),
                                teacher.backbone.layers[t].state_dict().values()):
            assert torch.equal(a, b), (s, name)
    assert torch.equal(student.backbone.embeddings.tok.weight, teacher.backbone.embeddings.tok.weight)
    assert torch.equal(student.heads["mlm"].dense.weight, teacher.heads["mlm"].dense.weight)
    assert models == {"": student}  # only the student is saved


def test_a_narrower_student_starts_from_scratch(tmp_path):
    teacher = load_teacher(str(tiny_teacher(tmp_path / "t")))
    student = TaskModel(teacher.config.replace(hidden_size=16, intermediate_size=32, num_layers=1),
                        {"mlm": {"kind": "mlm"}})
    assert not init_from_teacher(student, teacher)


def test_loss_is_the_distilbert_combination(tmp_path):
    """5 · T² KL(p_t || p_s) at T=2 over real tokens + 2 · MLM + 1 · (1 - cos) of the last states."""
    module, _ = build(tmp_path, **{"distill.init_from_teacher": "false"})
    module.eval()  # no dropout: the reference below recomputes the same forward
    data = batch()
    loss = module(**data).loss
    real = data["attention_mask"].bool()
    inputs = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
    s_out, t_out = module.student.backbone(**inputs), module.teacher.backbone(**inputs)
    s_head, t_head = module.student.heads["mlm"], module.teacher.heads["mlm"]
    zs, zt = s_head.logits(s_out.last_hidden_state[real]), t_head.logits(t_out.last_hidden_state[real])
    ce = F.kl_div(F.log_softmax(zs / 2, -1), F.softmax(zt / 2, -1), reduction="batchmean") * 4
    masked = data["mlm_labels"].ne(-100)
    mlm = F.cross_entropy(s_head.logits(s_out.last_hidden_state[masked]), data["mlm_labels"][masked])
    cos = 1 - F.cosine_similarity(s_out.last_hidden_state[real], t_out.last_hidden_state[real], dim=-1).mean()
    torch.testing.assert_close(loss, 5 * ce + 2 * mlm + cos, rtol=1e-5, atol=1e-5)


def test_the_teacher_is_frozen_and_stays_in_eval_mode(tmp_path):
    module, _ = build(tmp_path)
    module.train()
    assert not module.teacher.training and module.student.training
    module(**batch()).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in module.teacher.parameters())
    assert all(p.grad is not None for n, p in module.student.named_parameters() if "pooler" not in n)


def test_pretrain_saves_the_student_alone_and_learns(tmp_path):
    teacher = tiny_teacher(tmp_path / "teacher")
    config = distill_config(tmp_path, teacher, **{"schedule.max_steps": "8", "checkpoint.every_steps": "4"})
    result = pretrain(config, train_set=ToyPretrainingData("mlm", size=64), eval_set=None)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    final = load_model(result.final_dir)
    assert final.config.num_layers == 1 and set(final.head_specs()) == {"mlm"}
    saved = load_weights(tmp_path / "run" / "checkpoints" / "step-0000004" / "model.safetensors")
    assert set(saved) == set(load_weights(result.final_dir / "model.safetensors"))
    assert not any("teacher" in k for k in saved)


def test_errors_name_the_problem(tmp_path):
    bare = tiny_teacher(tmp_path / "bare", heads={})
    with pytest.raises(ValueError, match="no masked-LM head"):
        build_pretraining_model(distill_config(tmp_path, bare), 40, 0)
    model, _ = build_pretraining_model(distill_config(tmp_path, bare, **{"distill.alpha_ce": "0"}), 40, 0)
    assert model(**batch()).loss.isfinite()
    narrow = {"model.overrides.hidden_size": "16", "model.overrides.intermediate_size": "32"}
    with pytest.raises(ValueError, match="alpha_cos"):
        build(tmp_path, **narrow)
    with pytest.raises(ValueError, match="distill.teacher is not set"):
        build_pretraining_model(load_config(None, tiny_overrides("distill", str(tmp_path / "r"))), 40, 0)
    with pytest.raises(ValueError, match="drop model.init_from"):
        distill_config(tmp_path, bare, **{"model.init_from": str(bare)})
    with pytest.raises(ValueError, match="vocabulary"):
        build_pretraining_model(distill_config(tmp_path, bare, **{"distill.alpha_ce": "0"}), 50, 0)
    with pytest.raises(ValueError, match=r"embeddings.pos.weight \(16, 32\).*init_from_teacher=false"):
        build(tmp_path, **{"model.overrides.max_position_embeddings": "16"})
    assert make_objective(distill_config(tmp_path, bare).objective).kind == "distill"


def test_shipped_recipes_match_their_papers():
    distilbert, tinybert = load_config("distilbert"), load_config("tinybert")
    assert distilbert.objective.kind == "distill" and distilbert.objective.dynamic_masking
    d = distilbert.distill
    assert (d.alpha_ce, d.alpha_mlm, d.alpha_cos, d.temperature) == (5.0, 2.0, 1.0, 2.0)
    assert distilbert.model.overrides == {"num_layers": 6}  # half of BERT-base's 12
    assert tinybert.objective.kind == "tinybert"
    assert tinybert.model.overrides == {"num_layers": 4, "hidden_size": 312, "intermediate_size": 1200}
