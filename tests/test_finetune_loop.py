"""Fine-tuning on the shared step loop (lmforge/train/loop.py): an interrupted run resumed from its
on-disk checkpoint ends exactly where an uninterrupted one does, gradient accumulation equals one big
batch, and two torchrun processes equal one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _finetune_helpers import tiny_model_dir
from conftest import torchrun
from test_finetune import glue_slice, texts_of

from lmforge.cli import main as cli
from lmforge.finetune import CHECKPOINTS, FinetuneConfig, finetune
from lmforge.finetune_data import TaskBatches
from lmforge.weights import load_weights

TESTS = Path(__file__).resolve().parent


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def sst2(tmp_path_factory):
    root = tmp_path_factory.mktemp("sst2")
    data = glue_slice(root, "SST-2", 64, 24)
    return data, tiny_model_dir(root / "base", texts_of(data))


def config(data: Path, model: Path, out: Path, **changes) -> FinetuneConfig:
    values = dict(task="sst2", model=str(model), data=str(data), out=str(out), lr=1e-3, batch_size=8, epochs=2,
                  eval_every=5, progress=False)
    return FinetuneConfig(**{**values, **changes})


def train_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: Path, b: Path, **tolerance) -> None:
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], msg=name, **tolerance)


@pytest.mark.parametrize("select_best", [True, False])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(sst2, tmp_path, select_best):
    data, model = sst2
    whole = finetune(config(data, model, tmp_path / "whole", select_best=select_best))

    def stop_after_step_10(step: int, record: dict) -> None:
        if step == 10:
            raise Interrupted

    cut = tmp_path / "cut"
    with pytest.raises(Interrupted):
        finetune(config(data, model, cut, select_best=select_best), callbacks=(stop_after_step_10,))
    assert (cut / CHECKPOINTS / "step-0000010").is_dir()
    resumed = finetune(config(data, model, cut, select_best=select_best, resume=True))

    assert resumed["steps"] == whole["steps"] == 16
    assert resumed["selected"] == whole["selected"] and resumed["final"] == whole["final"]
    same_weights(tmp_path / "whole", cut, rtol=0, atol=0)
    drop = ("tokens_per_s", "elapsed_s")  # wall-clock fields
    a = [{k: v for k, v in r.items() if k not in drop} for r in train_records(tmp_path / "whole")]
    b = [{k: v for k, v in r.items() if k not in drop} for r in train_records(cut)]
    assert a == b  # every step's loss, lr and gradient norm, and every dev evaluation
    assert not (cut / CHECKPOINTS).exists()  # a finished run keeps its model, not its checkpoints


def test_gradient_accumulation_equals_one_big_batch(sst2, tmp_path):
    data, model = sst2  # the tiny model has no dropout: both runs compute the same function
    one = finetune(config(data, model, tmp_path / "one", epochs=1, select_best=False))
    two = finetune(config(data, model, tmp_path / "two", epochs=1, select_best=False, grad_accum=2))
    assert two["steps"] == one["steps"] == 8
    same_weights(tmp_path / "one", tmp_path / "two", rtol=1e-4, atol=1e-6)
    la = [r["loss"] for r in train_records(tmp_path / "one") if r["kind"] == "train"]
    lb = [r["loss"] for r in train_records(tmp_path / "two") if r["kind"] == "train"]
    assert lb == pytest.approx(la, rel=1e-5)


def test_micro_batches_split_each_global_batch_by_rank_and_step():
    features = [{"input_ids": [1] * (n % 7 + 2), "label": 0} for n in range(35)]

    class Task:
        @staticmethod
        def collate(chunk, pad):
            return {"n": torch.tensor(len(chunk)), "ids": torch.tensor([len(f["input_ids"]) for f in chunk])}

    def parts(rank: int, world: int, accum: int) -> list[torch.Tensor]:
        source = TaskBatches(Task, features, 0, 8, accum, rank, world, seed=3)
        assert source.steps_per_epoch == 5  # 4 full batches, and the short one (3 >= 2 parts)
        return [b["n"] for b in source.epoch(1, 2)]

    alone = parts(0, 1, 2)
    r0, r1 = parts(0, 2, 1), parts(1, 2, 1)
    assert [int(n) for n in alone] == [4, 4, 4, 4, 2, 1]  # steps 2..4 of epoch 1, two micro-batches each
    assert alone[0::2] == r0 and alone[1::2] == r1  # rank r holds what accumulation step r held
    with pytest.raises(ValueError, match="not divisible"):
        TaskBatches(Task, features, 0, 8, 3, 0, 1, seed=0)


def test_resume_without_a_checkpoint_and_a_bad_batch_split_are_one_line_errors(sst2, tmp_path, capsys):
    data, model = sst2
    code = cli.main(["finetune", "--task", "sst2", "--model", str(model), "--data", str(data), "--out",
                     str(tmp_path / "none"), "--resume", "--no-progress"])
    assert code == 2 and "no checkpoints/ directory to resume from" in capsys.readouterr().err
    code = cli.main(["finetune", "--task", "sst2", "--model", str(model), "--data", str(data), "--out",
                     str(tmp_path / "odd"), "--batch-size", "9", "--grad-accum", "2", "--no-progress"])
    assert code == 2 and "batch size 9 is not divisible by grad_accum x world size = 2" in capsys.readouterr().err


SCRIPT = """
import sys
from lmforge.finetune import FinetuneConfig, finetune
finetune(FinetuneConfig(task="sst2", model=sys.argv[2], data=sys.argv[1], out=sys.argv[3], lr=1e-3,
                        batch_size=8, grad_accum=int(sys.argv[4]), epochs=1, eval_every=4, progress=False,
                        select_best=False))
"""


def test_two_process_ddp_equals_one_process_with_accumulation(sst2, tmp_path):
    data, model = sst2
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS.parent),
                                                                               os.environ.get("PYTHONPATH", "")])}
    one = subprocess.run([sys.executable, str(script), str(data), str(model), str(tmp_path / "one"), "2"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(torchrun(tmp_path / "torchrun") + [str(script), str(data), str(model), str(tmp_path / "two"),
                                                            "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    if two.returncode != 0 and "gloo" in two.stderr.lower() and "not available" in two.stderr.lower():
        pytest.skip("gloo backend unavailable")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = train_records(tmp_path / "one"), train_records(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    def of(records: list[dict], kind: str, key: str) -> list[float]:
        return [r[key] for r in records if r["kind"] == kind]

    assert of(b, "train", "loss") == pytest.approx(of(a, "train", "loss"), rel=1e-5)
    assert of(b, "train", "tokens") == of(a, "train", "tokens")  # counted over both ranks
    assert of(b, "eval", "accuracy") == of(a, "eval", "accuracy")  # dev scored by rank 0 alone
    same_weights(tmp_path / "one", tmp_path / "two", rtol=1e-4, atol=1e-6)


def test_patience_stops_after_that_many_evaluations_without_a_new_best(sst2, tmp_path):
    data, model = sst2  # lr 1e-9: the dev score cannot move, so the first evaluation stays the best
    summary = finetune(config(data, model, tmp_path / "run", lr=1e-9, eval_every=1, epochs=3, patience=2))
    evals = [r for r in train_records(tmp_path / "run") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2, 3]  # the best, then two without a better score
    assert summary["steps"] == 3 < summary["planned_steps"] == 24
    assert summary["selected"]["step"] == 1 and "stopped early at step 3 of 24" in summary["selection"]


def test_one_config_system_file_then_overrides_then_flags(tmp_path, capsys):
    import yaml

    recipe = tmp_path / "run.yaml"
    recipe.write_text("task: sst2\nmodel: base\ndata: glue\nout: run\nlr: 1.0e-4\nbatch_size: 8\n"
                      "options:\n  doc_stride: 96\n")
    assert cli.main(["finetune", "--config", str(recipe), "lr=2e-4", "grad_accum=2", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["lr"], printed["batch_size"], printed["grad_accum"]) == (2e-4, 8, 2)
    assert printed["options"]["doc_stride"] == 96 and printed["patience"] == 0  # a default stays
    assert cli.main(["finetune", "--config", str(recipe), "lr=2e-4", "--lr", "3e-4", "--doc-stride", "64",
                     "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["lr"] == 3e-4 and printed["options"]["doc_stride"] == 64  # a given flag wins
    recipe.write_text("task: sst2\nlearning_rate: 1.0e-4\n")
    assert cli.main(["finetune", "--config", str(recipe), "--print-config"]) == 2
    err = capsys.readouterr().err
    assert str(recipe) in err and "learning_rate" in err
