"""Exact resume: a run SIGKILLed after a checkpoint and resumed equals a run that never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

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
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: like a power cut

config = load_config(None, tiny_overrides("mlm_nsp", sys.argv[1], **{{
    "schedule.max_steps": "10", "checkpoint.every_steps": "3", "checkpoint.keep_last": "1",
    "eval.every_steps": "5"}}))
pretrain(config, resume=sys.argv[3] == "resume", callbacks=(killer,),
         train_set=ToyPretrainingData("mlm_nsp", size=40), eval_set=ToyPretrainingData("mlm_nsp", size=16, split="valid"))
"""


def launch(tmp: Path, run_dir: Path, kill_at: int, mode: str) -> subprocess.CompletedProcess:
    script = tmp / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(script), str(run_dir), str(kill_at), mode],
                          capture_output=True, text=True, env=env, timeout=120)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    straight = tmp_path / "straight"
    done = launch(tmp_path, straight, -1, "fresh")
    assert done.returncode == 0, done.stderr

    broken = tmp_path / "broken"
    killed = launch(tmp_path, broken, 8, "fresh")  # checkpoints at 3 and 6, killed after step 8
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (broken / "final").exists()
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["step-0000006"]
    resumed = launch(tmp_path, broken, -1, "resume")
    assert resumed.returncode == 0, resumed.stderr

    def records(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    a, b = records(straight), records(broken)
    assert [r["step"] for r in b] == list(range(1, 11))  # steps 7-8 of the killed run were replaced
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # exact, float for float
    assert [r.get("eval_loss") for r in a] == [r.get("eval_loss") for r in b]
    wa, wb = load_weights(straight / "final" / "model.safetensors"), load_weights(broken / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_resume_restores_the_optimizer_and_counters(tmp_path):
    run_dir = tmp_path / "run"
    killed = launch(tmp_path, run_dir, 4, "fresh")
    assert killed.returncode == -signal.SIGKILL
    state = torch.load(run_dir / "checkpoints" / "step-0000003" / "trainer_state.pt", weights_only=True)
    assert state["train_state"]["step"] == 3
    assert state["optimizer"]["state"]  # Adam moments were saved
    assert all(int(s["step"]) == 3 for s in state["optimizer"]["state"].values())
