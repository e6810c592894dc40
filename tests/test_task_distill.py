"""Task-specific distillation: α_ce · soft targets + α_task · gold loss for every task head kind,
against the plain formulas; the teacher frozen; heads that cannot be compared refused."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lmforge.config import ModelConfig
from lmforge.models import TaskModel
from lmforge.task_distill import TaskDistillation, TaskDistillSettings

TINY = dict(vocab_size=40, hidden_size=32, num_heads=2, intermediate_size=64, max_position_embeddings=32,
            dropout=0.0, attention_dropout=0.0, classifier_dropout=0.0)


def pair(head: dict, student_head: dict | None = None) -> TaskDistillation:
    torch.manual_seed(0)
    teacher = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=2, **TINY), {"task": head})
    student = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=1, **TINY), {"task": student_head or head})
    return TaskDistillation(student, teacher, TaskDistillSettings())


def inputs(batch: int = 4, seq: int = 10) -> dict:
    gen = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, 7:] = 0
    return {"input_ids": torch.randint(5, 40, (batch, seq), generator=gen), "attention_mask": mask}


def kl(s, t, temperature=2.0):
    return F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1),
                    reduction="batchmean") * temperature ** 2


def logits_of(module, batch):
    s = module.student(**batch).heads["task"]
    t = module.teacher(**batch).heads["task"]
    return s, t


def test_classification_is_half_soft_targets_half_gold():
    module = pair({"kind": "classification", "num_labels": 3})
    batch = {**inputs(), "labels": torch.tensor([0, 2, 1, 1])}
    loss = module(**batch).loss
    s, t = logits_of(module, batch)
    torch.testing.assert_close(loss, 0.5 * kl(s.logits, t.logits) + 0.5 * F.cross_entropy(s.logits, batch["labels"]))


def test_regression_matches_the_teachers_score():
    module = pair({"kind": "classification", "num_labels": 1})
    batch = {**inputs(), "labels": torch.tensor([0.5, 1.0, 2.0, 3.5])}
    loss = module(**batch).loss
    s, t = logits_of(module, batch)
    want = 0.5 * F.mse_loss(s.logits, t.logits) + 0.5 * F.mse_loss(s.logits.squeeze(-1), batch["labels"])
    torch.testing.assert_close(loss, want)


def test_tagging_compares_the_scored_tokens_only():
    module = pair({"kind": "token_classification", "num_labels": 5})
    labels = torch.randint(0, 5, (4, 10), generator=torch.Generator().manual_seed(2))
    labels[:, 0] = -100
    labels[0, 7:] = -100
    batch = {**inputs(), "labels": labels}
    loss = module(**batch).loss
    s, t = logits_of(module, batch)
    scored = labels.ne(-100)
    gold = F.cross_entropy(s.logits.reshape(-1, 5), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, 0.5 * kl(s.logits[scored], t.logits[scored]) + 0.5 * gold)


def test_spans_are_distributions_over_positions():
    module = pair({"kind": "qa"})
    batch = {**inputs(), "start_positions": torch.tensor([1, 2, 3, 0]), "end_positions": torch.tensor([2, 4, 3, 0])}
    loss = module(**batch).loss
    s, t = logits_of(module, batch)
    soft = (kl(s.logits[..., 0], t.logits[..., 0]) + kl(s.logits[..., 1], t.logits[..., 1])) / 2
    torch.testing.assert_close(loss, 0.5 * soft + 0.5 * s.loss)


def test_the_teacher_is_frozen_and_only_the_student_learns():
    module = pair({"kind": "classification", "num_labels": 3})
    module.train()
    assert not module.teacher.training
    module(**inputs(), labels=torch.tensor([0, 2, 1, 1])).loss.backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert module.student.heads["task"].out.weight.grad is not None


def test_heads_that_cannot_be_compared_are_refused():
    with pytest.raises(ValueError, match="not the teacher's"):
        pair({"kind": "classification", "num_labels": 3}, {"kind": "classification", "num_labels": 2})
    with pytest.raises(ValueError, match="no soft-target loss for a 'mlm' head"):
        pair({"kind": "mlm"})
    with pytest.raises(ValueError, match="temperature"):
        TaskDistillSettings(temperature=0.0)


def test_a_student_with_an_auxiliary_head_keeps_its_loss_in_the_gold_term():
    """GPT-1 fine-tuning adds an auxiliary head to the student (§3.2); the teacher's one head is distilled."""
    torch.manual_seed(0)
    head = {"kind": "classification", "num_labels": 3}
    aux = {"kind": "classification", "num_labels": 2, "label_key": "aux_labels", "loss_weight": 0.5}
    teacher = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=2, **TINY), {"task": head})
    student = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=1, **TINY), {"task": head, "aux": aux})
    module = TaskDistillation(student, teacher, TaskDistillSettings())
    batch = {**inputs(), "labels": torch.tensor([0, 2, 1, 1]), "aux_labels": torch.tensor([1, 0, 0, 1])}
    loss = module(**batch).loss
    out = module.student(**batch)
    t = module.teacher(**batch).heads["task"].logits
    s, a = out.heads["task"].logits, out.heads["aux"].logits
    own = F.cross_entropy(s, batch["labels"]) + 0.5 * F.cross_entropy(a, batch["aux_labels"])
    torch.testing.assert_close(loss, 0.5 * kl(s, t) + 0.5 * own)
    with pytest.raises(ValueError, match="the student has no 'task' head"):
        TaskDistillation(TaskModel(student.config, {"other": head}), teacher, TaskDistillSettings())


def test_layer_losses_follow_tinybert_through_the_layer_map():
    """TinyBERT §3.1 at the task stage: a 1-layer student and a 2-layer teacher, g(1) = 2: the
    embeddings (eq. 9), then layer 1's attention scores against the teacher's layer 2 (eq. 7, padding
    keys zeroed in both) and its hidden states (eq. 8), MSE each, no projection (same width)."""
    torch.manual_seed(0)
    head = {"kind": "classification", "num_labels": 3}
    teacher = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=2, **TINY), {"task": head})
    student = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=1, **TINY), {"task": head})
    module = TaskDistillation(student, teacher, TaskDistillSettings(alpha_layers=0.25))
    batch = {**inputs(), "labels": torch.tensor([0, 2, 1, 1])}
    loss = module(**batch).loss
    s = module.student(**batch, output_hidden_states=True, output_attentions=True)
    t = module.teacher(**batch, output_hidden_states=True, output_attentions=True)
    pad = batch["attention_mask"].eq(0)[:, None, None, :]
    assert pad.any() and s.backbone.attentions[0].shape == (4, 2, 10, 10)
    layers = (F.mse_loss(s.backbone.hidden_states[0], t.backbone.hidden_states[0])
              + F.mse_loss(s.backbone.attentions[0].masked_fill(pad, 0), t.backbone.attentions[1].masked_fill(pad, 0))
              + F.mse_loss(s.backbone.hidden_states[1], t.backbone.hidden_states[2]))
    s_logits, t_logits = s.heads["task"].logits, t.heads["task"].logits
    want = 0.5 * kl(s_logits, t_logits) + 0.5 * F.cross_entropy(s_logits, batch["labels"]) + 0.25 * layers
    torch.testing.assert_close(loss, want)
    assert layers > 0  # the student is not the teacher: the term is live

    narrow = TaskModel(ModelConfig.from_name("bert-tiny", num_layers=1, **{**TINY, "hidden_size": 16}), {"task": head})
    with pytest.raises(ValueError, match="the student's width 16 and 2 heads must be the teacher's 32 and 2"):
        TaskDistillation(narrow, teacher, TaskDistillSettings(alpha_layers=1.0))
    TaskDistillation(narrow, teacher, TaskDistillSettings())  # without the layer losses a narrower student is fine
