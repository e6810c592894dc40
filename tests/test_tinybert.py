"""TinyBERT general distillation (Jiao et al. 2020 §3): the layer-wise loss against the formulas,
the projections W_e / W_h saved as a model of their own, and the errors for unusable pairs."""

from __future__ import annotations

import pytest
import torch
from distill_toy import tiny_teacher
from pretrain_toy import ToyPretrainingData, tiny_overrides
from torch.nn import functional as F

from lmforge.models.task_model import load_model
from lmforge.objectives.tinybert import HiddenProjections
from lmforge.pretrain import pretrain
from lmforge.train.config import load_config
from lmforge.train.models import build_pretraining_model
from lmforge.weights import load_weights

NARROW = {"model.overrides.hidden_size": "16", "model.overrides.intermediate_size": "32"}


def tiny_config(tmp_path, teacher, **extra: str):
    items = {"distill.teacher": str(teacher), "model.overrides.num_layers": "1", **NARROW, **extra}
    return load_config(None, tiny_overrides("tinybert", str(tmp_path / "run"), **items))


def batch():
    data = ToyPretrainingData("mlm", size=8)
    out = data.collate([data[i] for i in range(8)])
    out.pop("token_type_ids", None)
    return out


def test_loss_is_the_sum_of_eqs_7_to_10(tmp_path):
    teacher = tiny_teacher(tmp_path / "teacher", num_layers=2)
    module, models = build_pretraining_model(tiny_config(tmp_path, teacher), 40, 0)
    assert set(models) == {"", "projections"} and models["projections"] is module.projections
    assert module.map == [0, 2]  # g(1) = 2: the 1-layer student's layer learns from the teacher's last
    module.eval()
    data = batch()
    loss = module(**data).loss
    inputs = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
    s = module.student.backbone(**inputs, output_hidden_states=True, output_attentions=True)
    t = module.teacher.backbone(**inputs, output_hidden_states=True, output_attentions=True)
    w = module.projections.backbone
    keys = data["attention_mask"].bool()[:, None, None, :]  # (B, 1, 1, T)
    embd = F.mse_loss(w.embedding(s.hidden_states[0]), t.hidden_states[0])
    attn = F.mse_loss(s.attentions[0] * keys, t.attentions[1] * keys)
    hidn = F.mse_loss(w.hidden(s.hidden_states[1]), t.hidden_states[2])
    real = data["attention_mask"].bool()
    zs = module.student.heads["mlm"].logits(s.last_hidden_state[real])
    zt = module.teacher.heads["mlm"].logits(t.last_hidden_state[real])
    pred = F.kl_div(F.log_softmax(zs, -1), F.softmax(zt, -1), reduction="batchmean")  # t = 1
    torch.testing.assert_close(loss, embd + attn + hidn + pred, rtol=1e-5, atol=1e-5)
    assert attn > 0 and hidn > 0 and embd > 0


def test_projections_are_checkpointed_and_saved_beside_the_student(tmp_path):
    teacher = tiny_teacher(tmp_path / "teacher")
    config = tiny_config(tmp_path, teacher, **{"schedule.max_steps": "6", "checkpoint.every_steps": "3"})
    result = pretrain(config, train_set=ToyPretrainingData("mlm", size=48), eval_set=None)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    run = tmp_path / "run"
    projections = load_model(run / "final-projections")
    assert isinstance(projections.backbone, HiddenProjections)
    assert projections.backbone.hidden.weight.shape == (32, 16)  # student 16 -> teacher 32 (W_h)
    saved = load_weights(run / "checkpoints" / "step-0000006" / "projections" / "model.safetensors")
    assert set(saved) == {f"backbone.{w}.{p}" for w in ("embedding", "hidden") for p in ("weight", "bias")}
    assert torch.equal(saved["backbone.hidden.weight"], projections.backbone.hidden.weight)
    assert load_model(result.final_dir).config.hidden_size == 16


def test_errors_name_the_problem(tmp_path):
    teacher = tiny_teacher(tmp_path / "teacher")
    with pytest.raises(ValueError, match="num_heads"):
        build_pretraining_model(tiny_config(tmp_path, teacher, **{"model.overrides.num_heads": "4"}), 40, 0)
    with pytest.raises(ValueError, match="divide"):
        build_pretraining_model(tiny_config(tmp_path, tiny_teacher(tmp_path / "t3", num_layers=3),
                                            **{"model.overrides.num_layers": "2"}), 40, 0)
    bare = tiny_teacher(tmp_path / "bare", heads={})
    with pytest.raises(ValueError, match="tinybert_pred_weight"):
        build_pretraining_model(tiny_config(tmp_path, bare), 40, 0)
    module, models = build_pretraining_model(tiny_config(tmp_path, bare, **{"distill.tinybert_pred_weight": "0"}),
                                             40, 0)
    assert not models[""].heads and module(**batch()).loss.isfinite()
