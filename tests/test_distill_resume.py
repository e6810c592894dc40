"""Exact resume of a distillation run after SIGKILL: the teacher is reloaded from its directory (it
is never checkpointed), the student and its optimizer state come back from the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from distill_toy import tiny_teacher

from lmforge.weights import load_weights

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from lmforge.train.config import load_config
from lmforge.pretrain import pretrain
from pretrain_toy import ToyPretrainingData, tiny_overrides

kill_at = int(sys.argv[2])
def killer(step, record):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

config = load_config(None, tiny_overrides(sys.argv[4], sys.argv[1], **{{
    "schedule.max_steps": "10", "checkpoint.every_steps": "3", "checkpoint.keep_last": "1",
    "eval.every_steps": "5", "distill.teacher": {teacher!r}, "model.overrides.num_layers": "1"}}))
pretrain(config, resume=sys.argv[3] == "resume", callbacks=(killer,),
         train_set=ToyPretrainingData("mlm", size=40), eval_set=ToyPretrainingData("mlm", size=16, split="valid"))
"""


def launch(tmp: Path, run_dir: Path, kill_at: int, mode: str, kind: str) -> subprocess.CompletedProcess:
    script = tmp / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS), teacher=str(tmp / "teacher")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(run_dir), str(kill_at), mode, kind],
                          capture_output=True, text=True, env=env, timeout=120)


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def final_weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every saved model of the run: final/ and final-<sub>/ (TinyBERT's projections)."""
    return {p.name: load_weights(p / "model.safetensors") for p in sorted(run.glob("final*"))}


@pytest.mark.parametrize("kind", ["distill", "tinybert"])
def test_sigkill_then_resume_is_bitwise_identical(tmp_path, kind):
    tiny_teacher(tmp_path / "teacher")
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    done = launch(tmp_path, straight, -1, "fresh", kind)
    assert done.returncode == 0, done.stderr
    killed = launch(tmp_path, broken, 8, "fresh", kind)  # checkpoints at 3 and 6, killed after step 8
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["step-0000006"]
    resumed = launch(tmp_path, broken, -1, "resume", kind)
    assert resumed.returncode == 0, resumed.stderr

    a, b = records(straight), records(broken)
    assert [r["step"] for r in b] == list(range(1, 11))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact, float for float
    assert [r.get("eval_loss") for r in a] == [r.get("eval_loss") for r in b]
    wa, wb = final_weights(straight), final_weights(broken)
    assert wa.keys() == wb.keys() and ("final-projections" in wa) == (kind == "tinybert")  # W_e, W_h too
    for sub in wa:
        assert wa[sub].keys() == wb[sub].keys()
        for name in wa[sub]:
            assert torch.equal(wa[sub][name], wb[sub][name]), (sub, name)
