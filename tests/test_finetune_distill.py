"""`lmforge finetune --teacher RUN_DIR [--student-layers K]` on slices of the real data with tiny
models: the loss the loop steps is α_ce · soft targets + α_task · gold (recomputed by hand on the first
batch), the student starts from every other layer of --model, the teacher stays frozen and is never
saved, a teacher of another task or other labels is refused in one line, and a distillation run
resumed from its checkpoint ends bit for bit where an uninterrupted one does."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from _finetune_helpers import tiny_tokenizer
from conftest import data_path
from test_finetune import glue_slice, head_lines, texts_of
from test_finetune_loop import Interrupted, config, same_weights, train_records
from torch.nn import functional as F

from lmforge.cli import main as cli
from lmforge.finetune import CHECKPOINTS, HEAD, FinetuneConfig, finetune
from lmforge.heads import IGNORE
from lmforge.models import build_model, load_model, save_model
from lmforge.task_distill import TaskDistillation
from lmforge.weights import load_weights

LAYERS = 4  # the tiny --model; students keep 2 (layers 0 and 2)


def base_dir(directory: Path, texts: list[str]) -> Path:
    tok = tiny_tokenizer(texts)
    model = build_model("bert-tiny", vocab_size=tok.get_vocab_size(), hidden_size=32, num_layers=LAYERS,
                        num_heads=2, intermediate_size=64, max_position_embeddings=512, dropout=0.0,
                        attention_dropout=0.0)
    return save_model(model, directory, tok)


def teacher_run(data: Path, base: Path, out: Path, task: str) -> Path:
    finetune(FinetuneConfig(task=task, model=str(base), data=str(data), out=str(out), lr=1e-3, batch_size=8,
                            epochs=1, progress=False))
    return out


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    root = tmp_path_factory.mktemp("sst2")
    data = glue_slice(root, "SST-2", 64, 24)
    base = base_dir(root / "base", texts_of(data))
    return "sst2", data, base, teacher_run(data, base, root / "teacher", "sst2")


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    data = root / "conll"
    data.mkdir()
    for name, n in (("eng.train", 300), ("eng.testa", 150)):
        (data / name).write_text("".join(head_lines(data_path("conll2003", name), n)))
    base = base_dir(root / "base", texts_of(data))
    return "ner", data, base, teacher_run(data, base, root / "teacher", "ner")


@pytest.fixture
def first_step(monkeypatch):
    """What the distillation module saw on its first call: itself, the batch, the student's weights
    and the RNG state before it ran (dropout), and the loss it returned."""
    seen: dict = {}
    forward = TaskDistillation.forward

    def spy(self, **batch):
        if not seen:
            seen.update(module=self, batch={k: v.clone() for k, v in batch.items()}, rng=torch.get_rng_state(),
                        student={k: v.clone() for k, v in self.student.state_dict().items()})
        out = forward(self, **batch)
        seen.setdefault("loss", out.loss.detach().clone())
        return out

    monkeypatch.setattr(TaskDistillation, "forward", spy)
    return seen


def by_hand(seen: dict, temperature: float, alpha_ce: float, alpha_task: float) -> torch.Tensor:
    """Hinton et al. 2015 §2 with T², at the scored positions, plus cross-entropy on the gold labels."""
    module, batch = seen["module"], seen["batch"]
    student = copy.deepcopy(module.student)
    student.load_state_dict(seen["student"])
    student.train()
    torch.set_rng_state(seen["rng"])
    s = student(**batch).heads[HEAD].logits
    with torch.no_grad():
        t = module.teacher(**batch).heads[HEAD].logits
    labels = batch["labels"]
    scored = labels.ne(IGNORE)
    soft = F.kl_div(F.log_softmax(s[scored] / temperature, -1), F.softmax(t[scored] / temperature, -1),
                    reduction="batchmean") * temperature ** 2
    gold = F.cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    return alpha_ce * soft + alpha_task * gold


@pytest.mark.parametrize("task", ["sst2", "ner"])
def test_distillation_end_to_end(task, request, tmp_path, first_step, capsys):
    name, data, base, teacher = request.getfixturevalue(task)
    out = tmp_path / "student"
    code = cli.main(["finetune", "--task", name, "--model", str(base), "--data", str(data), "--out", str(out),
                     "--teacher", str(teacher), "--student-layers", "2", "--distill-temperature", "3",
                     "--distill-alpha-ce", "0.7", "--distill-alpha-task", "0.3", "--lr", "1e-3",
                     "--batch-size", "8", "--epochs", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == summary["planned_steps"] and summary["selected"][summary["main_metric"]] >= 0

    # the loop stepped α_ce · T² KL + α_task · gold, with the flags' values
    torch.testing.assert_close(first_step["loss"], by_hand(first_step, 3.0, 0.7, 0.3))
    first = next(r for r in train_records(out) if r["kind"] == "train")
    assert first["step"] == 1 and first["loss"] == pytest.approx(first_step["loss"].item(), rel=1e-6)

    # the student started from --model's layers 0 and 2 (DistilBERT §3), embeddings as they were
    base_weights, start = load_weights(base / "model.safetensors"), first_step["student"]
    for key, value in base_weights.items():
        if key.startswith("backbone.layers."):
            index, rest = key[len("backbone.layers."):].split(".", 1)
            if int(index) % 2 == 0:
                assert torch.equal(start[f"backbone.layers.{int(index) // 2}.{rest}"], value), key
        elif key.startswith("backbone."):
            assert torch.equal(start[key], value), key

    # the teacher: frozen, in eval mode, its weights those of its run; the run holds the student only
    module = first_step["module"]
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    teacher_state = module.teacher.state_dict()
    for key, value in load_weights(teacher / "model.safetensors").items():
        assert torch.equal(teacher_state[key].cpu(), value), key
    saved = load_weights(out / "model.safetensors")
    kept = {k for k in base_weights if k.startswith("backbone.") and not k.startswith(("backbone.layers.2.",
                                                                                        "backbone.layers.3."))}
    assert {k for k in saved if not k.startswith("heads.")} == kept and not any("teacher" in k for k in saved)
    assert load_model(out).config.num_layers == 2
    assert load_model(out).heads[HEAD].spec() == load_model(teacher).heads[HEAD].spec()
    assert json.loads((out / "args.json").read_text())["teacher"] == str(teacher)


def test_a_teacher_that_cannot_teach_this_student_is_refused_in_one_line(sst2, tmp_path, capsys):
    name, data, base, teacher = sst2

    def refused(teacher_dir: Path, *extra: str) -> str:
        code = cli.main(["finetune", "--task", name, "--model", str(base), "--data", str(data), "--out",
                         str(tmp_path / "run"), "--teacher", str(teacher_dir), "--no-progress", *extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        return err

    other_task = tmp_path / "cola-teacher"
    shutil.copytree(teacher, other_task)
    info = json.loads((other_task / "task.json").read_text())
    (other_task / "task.json").write_text(json.dumps({**info, "task": "cola", "task_name": "cola"}))
    assert "was fine-tuned on 'cola', not 'sst2'" in refused(other_task)

    relabelled = tmp_path / "relabelled-teacher"
    shutil.copytree(teacher, relabelled)
    config_json = json.loads((relabelled / "config.json").read_text())
    assert config_json["heads"][HEAD]["label_names"] == ["0", "1"]
    config_json["heads"][HEAD]["label_names"] = ["negative", "positive"]
    (relabelled / "config.json").write_text(json.dumps(config_json))
    assert "has the labels ['negative', 'positive'], the student's data ['0', '1']" in refused(relabelled)

    assert "not a finished fine-tuning run (no task.json)" in refused(base)
    assert f"--student-layers 3 must divide the model's {LAYERS} layers" in refused(teacher, "--student-layers", "3")


def test_a_resumed_distillation_run_ends_exactly_where_an_uninterrupted_one_does(sst2, tmp_path):
    _, data, base, teacher = sst2
    distil = dict(teacher=str(teacher), student_layers=2, distill_temperature=3.0)
    whole = finetune(config(data, base, tmp_path / "whole", **distil))

    def stop_after_step_10(step: int, record: dict) -> None:
        if step == 10:
            raise Interrupted

    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        finetune(config(data, base, cut, **distil), callbacks=(stop_after_step_10,))
    checkpoint = cut / CHECKPOINTS / "step-0000010"
    files = sorted(checkpoint.rglob("*.safetensors"))  # the student and the best dev model so far
    assert [p.name for p in files] == ["best.safetensors", "model.safetensors"]
    for held in map(load_weights, files):  # two layers each: the student's, no teacher
        assert held.keys() == load_weights(cut / CHECKPOINTS / "step-0000010" / "model.safetensors").keys()
        assert not any(k.startswith("backbone.layers.2.") or "teacher" in k for k in held)
    resumed = finetune(config(data, base, cut, resume=True, **distil))

    assert resumed["steps"] == whole["steps"] == 16
    assert resumed["selected"] == whole["selected"] and resumed["final"] == whole["final"]
    same_weights(tmp_path / "whole", cut, rtol=0, atol=0)
    drop = ("tokens_per_s", "elapsed_s")
    a = [{k: v for k, v in r.items() if k not in drop} for r in train_records(tmp_path / "whole")]
    b = [{k: v for k, v in r.items() if k not in drop} for r in train_records(cut)]
    assert a == b


def test_distillation_settings_go_through_the_config_system(tmp_path, capsys):
    import yaml

    recipe = tmp_path / "run.yaml"
    recipe.write_text("task: sst2\nmodel: base\ndata: glue\nout: run\nteacher: runs/sst2\ndistill_alpha_ce: 0.8\n")
    assert cli.main(["finetune", "--config", str(recipe), "distill_alpha_task=0.2", "--distill-temperature", "4",
                     "--student-layers", "3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["teacher"] == "runs/sst2" and printed["student_layers"] == 3
    assert (printed["distill_temperature"], printed["distill_alpha_ce"], printed["distill_alpha_task"]) == (4, 0.8, 0.2)
