"""`lmforge finetune --teacher RUN_DIR` on slices of the real data with tiny models, for every kind of
task head (classification, regression, tagging, SQuAD spans): the loss the loop steps is α_ce · soft
targets + α_task · gold (+ α_layers · TinyBERT's layer losses), recomputed by hand on the first batch;
the student starts from every other layer of the fine-tuned teacher (or of --model), the teacher stays
frozen and is never saved, a teacher that cannot teach the student is refused in one line, and a
distillation run resumed from its checkpoint ends bit for bit where an uninterrupted one does."""

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
from tokenizers import Tokenizer
from torch.nn import functional as F

from lmforge.cli import main as cli
from lmforge.finetune import CHECKPOINTS, HEAD, finetune
from lmforge.heads import IGNORE
from lmforge.models import build_model, load_model, save_model
from lmforge.task_distill import TaskDistillation, TaskDistillSettings
from lmforge.weights import load_weights

LAYERS = 4  # the tiny --model; students keep 2 (layers 0 and 2)
SQUAD_FLAGS = ("--train-articles", "0:1", "--eval-articles=-1:", "--max-length", "128", "--doc-stride", "48")


def base_dir(directory: Path, texts: list[str], hidden_size: int = 32, tok: Tokenizer | None = None) -> Path:
    tok = tok or tiny_tokenizer(texts)
    model = build_model("bert-tiny", vocab_size=tok.get_vocab_size(), hidden_size=hidden_size, num_layers=LAYERS,
                        num_heads=2, intermediate_size=64, max_position_embeddings=512, dropout=0.0,
                        attention_dropout=0.0)
    return save_model(model, directory, tok)


def teacher_run(data: Path, base: Path, out: Path, task: str, *extra: str) -> Path:
    assert cli.main(["finetune", "--task", task, "--model", str(base), "--data", str(data), "--out", str(out),
                     "--lr", "1e-3", "--batch-size", "8", "--epochs", "1", "--no-progress", *extra]) == 0
    return out


def glue_task(factory, name: str, folder: str) -> tuple:
    root = factory.mktemp(name)
    data = glue_slice(root, folder, 64, 24)
    base = base_dir(root / "base", texts_of(data))
    return name, data, base, teacher_run(data, base, root / "teacher", name), ()


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    return glue_task(tmp_path_factory, "sst2", "SST-2")


@pytest.fixture(scope="module")
def stsb(tmp_path_factory):
    return glue_task(tmp_path_factory, "stsb", "STS-B")


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    root = tmp_path_factory.mktemp("ner")
    data = root / "conll"
    data.mkdir()
    for name, n in (("eng.train", 300), ("eng.testa", 150)):
        (data / name).write_text("".join(head_lines(data_path("conll2003", name), n)))
    base = base_dir(root / "base", texts_of(data))
    return "ner", data, base, teacher_run(data, base, root / "teacher", "ner"), ()


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad")
    doc = json.loads(data_path("squad", "dev-v1.1.json").read_text())
    small = {"version": "1.1", "data": [
        {"title": a["title"], "paragraphs": [dict(p, qas=p["qas"][:4]) for p in a["paragraphs"][:3]]}
        for a in doc["data"][:2]]}
    data = root / "squad.json"
    data.write_text(json.dumps(small))
    texts = [p["context"] for a in small["data"] for p in a["paragraphs"]]
    texts += [q["question"] for a in small["data"] for p in a["paragraphs"] for q in p["qas"]]
    base = base_dir(root / "base", texts)
    return "squad", data, base, teacher_run(data, base, root / "teacher", "squad", *SQUAD_FLAGS), SQUAD_FLAGS


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


def kl(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015 §2 with T²: KL(softmax(t/T) || softmax(s/T)), averaged over rows."""
    return F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1),
                    reduction="batchmean") * temperature ** 2


def soft_and_gold(kind: str, s: torch.Tensor, t: torch.Tensor, batch: dict, temperature: float) -> tuple:
    """The soft-target and gold losses of one head kind, written out."""
    if kind == "qa":  # a distribution over the positions for the start and for the end
        seq = s.shape[1]

        def ce(x, y):
            return F.cross_entropy(x, y.clamp(0, seq), ignore_index=seq)

        soft = (kl(s[..., 0], t[..., 0], temperature) + kl(s[..., 1], t[..., 1], temperature)) / 2
        return soft, (ce(s[..., 0], batch["start_positions"]) + ce(s[..., 1], batch["end_positions"])) / 2
    labels = batch["labels"]
    if s.shape[-1] == 1:  # regression: MSE to the teacher's score
        return F.mse_loss(s, t), F.mse_loss(s.squeeze(-1), labels.float())
    scored = labels.ne(IGNORE)  # tagging: the labelled tokens; classification: every row
    gold = F.cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
    return kl(s[scored], t[scored], temperature), gold


def layer_term(s, t, mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT eqs. 7-9 for 2 student layers and 4 teacher layers (g(m) = 2m): embeddings, then each
    layer's attention scores (padding keys zeroed) and hidden states, MSE each."""
    keys = ~mask.bool()[:, None, None, :]
    loss = F.mse_loss(s.hidden_states[0], t.hidden_states[0])
    for m in (1, 2):
        loss = loss + F.mse_loss(s.attentions[m - 1].masked_fill(keys, 0), t.attentions[2 * m - 1].masked_fill(keys, 0))
        loss = loss + F.mse_loss(s.hidden_states[m], t.hidden_states[2 * m])
    return loss


def by_hand(seen: dict, temperature: float, alpha_ce: float, alpha_task: float, alpha_layers: float) -> torch.Tensor:
    module, batch = seen["module"], seen["batch"]
    student = copy.deepcopy(module.student)
    student.load_state_dict(seen["student"])
    student.train()
    torch.set_rng_state(seen["rng"])
    s = student(**batch, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        t = module.teacher(**batch, output_hidden_states=True, output_attentions=True)
    kind = student.heads[HEAD].kind
    soft, gold = soft_and_gold(kind, s.heads[HEAD].logits, t.heads[HEAD].logits, batch, temperature)
    layers = layer_term(s.backbone, t.backbone, batch["attention_mask"]) if alpha_layers else 0.0
    return alpha_ce * soft + alpha_task * gold + alpha_layers * layers


def starting_weights(init: str, base: Path, teacher: Path) -> dict[str, torch.Tensor]:
    """What the 2-layer student must start from: the teacher's (or --model's) layers 0 and 2 as its
    layers 0 and 1, their embeddings and pooler; with the teacher, its task head too (DistilBERT §3)."""
    source = load_weights((teacher if init == "teacher" else base) / "model.safetensors")
    want = {}
    for key, value in source.items():
        if key.startswith("backbone.layers."):
            index, rest = key[len("backbone.layers."):].split(".", 1)
            if int(index) % 2 == 0:
                want[f"backbone.layers.{int(index) // 2}.{rest}"] = value
        elif key.startswith("backbone.") or (init == "teacher" and key.startswith("heads.")):
            want[key] = value
    return want


@pytest.mark.parametrize("task, init, alpha_layers", [
    ("sst2", "teacher", 0.5), ("stsb", "teacher", 0.0), ("ner", "model", 0.5), ("squad", "teacher", 0.0)])
def test_distillation_end_to_end(task, init, alpha_layers, request, tmp_path, first_step, capsys):
    name, data, base, teacher, extra = request.getfixturevalue(task)
    capsys.readouterr()  # the teacher's run, when its fixture ran here
    out = tmp_path / "student"
    code = cli.main(["finetune", "--task", name, "--model", str(base), "--data", str(data), "--out", str(out),
                     "--teacher", str(teacher), "--student-layers", "2", "--student-init", init,
                     "--distill-temperature", "3", "--distill-alpha-ce", "0.7", "--distill-alpha-task", "0.3",
                     "--distill-alpha-layers", str(alpha_layers), "--lr", "1e-3", "--batch-size", "8",
                     "--epochs", "1", "--no-progress", *extra])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == summary["planned_steps"] and summary["main_metric"] in summary["selected"]

    # the loop stepped α_ce · soft + α_task · gold (+ α_layers · layers), with the flags' values
    torch.testing.assert_close(first_step["loss"], by_hand(first_step, 3.0, 0.7, 0.3, alpha_layers))
    first = next(r for r in train_records(out) if r["kind"] == "train")
    assert first["step"] == 1 and first["loss"] == pytest.approx(first_step["loss"].item(), rel=1e-6)

    # the student started from layers 0 and 2 of the teacher or of --model (DistilBERT §3)
    start = first_step["student"]
    want = starting_weights(init, base, teacher)
    assert want.keys() <= start.keys() and any(k.startswith("heads.") for k in want) == (init == "teacher")
    for key, value in want.items():
        assert torch.equal(start[key], value), key

    # the teacher: frozen, in eval mode, its weights those of its run; the run holds the student only
    module = first_step["module"]
    assert not module.teacher.training and not any(p.requires_grad for p in module.teacher.parameters())
    teacher_state = module.teacher.state_dict()
    for key, value in load_weights(teacher / "model.safetensors").items():
        assert torch.equal(teacher_state[key].cpu(), value), key
    saved = load_weights(out / "model.safetensors")
    kept = {k for k in load_weights(base / "model.safetensors")
            if k.startswith("backbone.") and not k.startswith(("backbone.layers.2.", "backbone.layers.3."))}
    assert {k for k in saved if not k.startswith("heads.")} == kept and not any("teacher" in k for k in saved)
    assert load_model(out).config.num_layers == 2
    assert load_model(out).heads[HEAD].spec() == load_model(teacher).heads[HEAD].spec()
    args = json.loads((out / "args.json").read_text())
    assert args["teacher"] == str(teacher) and args["student_init"] == init
    assert [args[f"distill_{k}"] for k in ("temperature", "alpha_ce", "alpha_task", "alpha_layers")] == [
        3.0, 0.7, 0.3, alpha_layers]

    # the student is an ordinary fine-tuned run: `evaluate` scores it as the loop did
    assert cli.main(["evaluate", "--model", str(out), "--data", str(data), *extra]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores[summary["main_metric"]] == pytest.approx(summary["selected"][summary["main_metric"]], abs=1e-6)


def test_a_teacher_that_cannot_teach_this_student_is_refused_in_one_line(sst2, tmp_path, capsys):
    name, data, base, teacher, _ = sst2

    def refused(teacher_dir: Path | None, *extra: str, model: Path = base) -> str:
        code = cli.main(["finetune", "--task", name, "--model", str(model), "--data", str(data), "--out",
                         str(tmp_path / "run"), *(("--teacher", str(teacher_dir)) if teacher_dir else ()),
                         "--no-progress", *extra])
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
    assert "--student-init teacher needs --teacher RUN_DIR" in refused(None, "--student-init", "teacher")

    narrow = base_dir(tmp_path / "narrow", [], hidden_size=16, tok=Tokenizer.from_file(str(base / "tokenizer.json")))
    assert "the student's sizes are not the teacher's" in refused(teacher, "--student-layers", "2", model=narrow)
    assert "the student's width 16 and 2 heads must be the teacher's 32 and 2" in refused(
        teacher, "--student-init", "model", "--distill-alpha-layers", "1", model=narrow)


def test_a_resumed_distillation_run_ends_exactly_where_an_uninterrupted_one_does(sst2, tmp_path):
    _, data, base, teacher, _ = sst2
    distil = dict(teacher=str(teacher), student_layers=2, distill_temperature=3.0, distill_alpha_layers=0.5)
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
    defaults = TaskDistillSettings()  # what the flags left out: the measured defaults, recorded in args.json
    args = json.loads((tmp_path / "whole" / "args.json").read_text())
    assert args["student_init"] == "teacher" and args["distill_temperature"] == 3.0
    assert (args["distill_alpha_ce"], args["distill_alpha_task"]) == (defaults.alpha_ce, defaults.alpha_task)
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
