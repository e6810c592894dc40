"""FSDP (FSDP2 `fully_shard`) through torchrun with 2 CPU processes on gloo.

The sharded run must train exactly like one process with the same global batch, and everything it
writes (checkpoints, final model) must hold full, unsharded weights in the same format, so a run
resumes under FSDP, and across strategies (FSDP checkpoint -> DDP, DDP checkpoint -> FSDP) with the
same world size (each rank's RNG stream is part of a checkpoint).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import torchrun

from lmforge.models import load_model
from lmforge.train.logger import read_metrics
from lmforge.weights import load_weights

TESTS = Path(__file__).resolve().parent

# argv: run_dir, grad_accum, crash_at (0 = never), "resume" | "fresh", ddp | fsdp
SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from lmforge.train.config import load_config
from lmforge.pretrain import pretrain
from pretrain_toy import ToyPretrainingData, tiny_overrides

crash_at = int(sys.argv[3])
def crash(step, record):
    if step == crash_at:
        os._exit(3)  # dies after step 4, unsaved: the last checkpoint is step 3

config = load_config(None, tiny_overrides("mlm_nsp", sys.argv[1], **{{
    "schedule.max_steps": "5", "optim.batch_size": "4", "optim.grad_accum": sys.argv[2],
    "model.overrides.dropout": "0.0", "model.overrides.attention_dropout": "0.0",
    "checkpoint.every_steps": "3", "eval.max_batches": "2", "eval.batch_size": "8",
    "system.distributed": sys.argv[5]}}))
pretrain(config, resume=sys.argv[4] == "resume", callbacks=(crash,),
         train_set=ToyPretrainingData("mlm_nsp", size=64),
         eval_set=ToyPretrainingData("mlm_nsp", size=32, split="valid"))
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_process(script: Path, run_dir: Path) -> subprocess.CompletedProcess:
    """World of one with grad_accum 4: the same 16-example global batch as 2 ranks x accum 2."""
    return subprocess.run([sys.executable, str(script), str(run_dir), "4", "0", "fresh", "ddp"],
                          capture_output=True, text=True, env=ENV, timeout=120)


def two_process(script: Path, run_dir: Path, strategy: str = "fsdp", crash_at: int = 0,
                resume: bool = False) -> subprocess.CompletedProcess:
    """2 ranks x grad_accum 2 (exercises the no-sync accumulation)."""
    done = subprocess.run(torchrun(script.parent / "torchrun") + [str(script), str(run_dir), "2", str(crash_at),
                                                                   "resume" if resume else "fresh", strategy],
                          capture_output=True, text=True, env=ENV, timeout=180)
    if done.returncode != 0 and "gloo" in done.stderr.lower() and "not available" in done.stderr.lower():
        pytest.skip("gloo backend unavailable")
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 1-process reference run and the uninterrupted FSDP run (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    script = tmp / "run.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    ref = one_process(script, tmp / "one")
    assert ref.returncode == 0, ref.stderr[-3000:]
    fsdp = two_process(script, tmp / "fsdp")
    assert fsdp.returncode == 0, fsdp.stderr[-3000:]
    return script, tmp


def losses(run: Path) -> list[float]:
    records = read_metrics(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    return [r["loss"] for r in records]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_weights(a / "model.safetensors"), load_weights(b / "model.safetensors")
    assert sorted(wa) == sorted(wb)  # same tensor names: unsharded, no FSDP prefixes, ties dropped alike
    for name in wa:
        assert wb[name].shape == wa[name].shape, name
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6, msg=name)


def test_fsdp_trains_like_one_process_and_saves_full_weights(runs):
    _, tmp = runs
    one, fsdp = tmp / "one", tmp / "fsdp"
    assert losses(fsdp) == pytest.approx(losses(one), rel=1e-5)
    assert read_metrics(fsdp)[-1]["eval_loss"] == pytest.approx(read_metrics(one)[-1]["eval_loss"], rel=1e-5)
    assert read_metrics(fsdp)[-1]["tokens"] == read_metrics(one)[-1]["tokens"]
    assert_same_weights(one / "final", fsdp / "final")
    assert_same_weights(one / "checkpoints" / "step-0000005", fsdp / "checkpoints" / "step-0000005")
    model = load_model(fsdp / "final")  # an ordinary lmforge model dir
    reference = load_model(one / "final")
    ids = torch.tensor([[1, 7, 7, 3, 7, 2]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).heads["mlm"].logits, reference(ids).heads["mlm"].logits,
                                   rtol=1e-4, atol=1e-5)
    # the optimizer state is full too: every moment tensor has its parameter's full shape
    state = torch.load(fsdp / "checkpoints" / "step-0000005" / "trainer_state.pt", weights_only=True)
    weights = load_weights(one / "final" / "model.safetensors")
    moments = state["optimizer"]["state"]
    assert moments and all(isinstance(name, str) for name in moments)
    for name, moment in moments.items():
        if name in weights:
            assert moment["exp_avg"].shape == weights[name].shape, name


@pytest.mark.parametrize("first, second", [("fsdp", "fsdp"), ("fsdp", "ddp"), ("ddp", "fsdp")])
def test_resume(runs, first, second):
    """Crash after step 4 (last checkpoint: step 3), resume under `second`: the resumed run repeats
    steps 4-5 with the same losses and ends with the same weights as the uninterrupted run."""
    script, tmp = runs
    run = tmp / f"{first}-then-{second}"
    crashed = two_process(script, run, first, crash_at=4)
    assert crashed.returncode != 0
    assert (run / "checkpoints" / "step-0000003").is_dir() and not (run / "final").exists()
    resumed = two_process(script, run, second, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert losses(run) == pytest.approx(losses(tmp / "one"), rel=1e-5)
    assert_same_weights(tmp / "one" / "final", run / "final")


SHARING_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from lmforge.train.config import load_config
from lmforge.pretrain import pretrain
from pretrain_toy import ToyPretrainingData, tiny_overrides

kind = sys.argv[2]
extra = ({{"model.preset": "albert-base-v2", "model.overrides.num_layer_groups": "1",
           "model.overrides.embedding_size": "16", "model.overrides.classifier_dropout": "0.0"}}
         if kind == "mlm_sop" else {{}})
config = load_config(None, tiny_overrides(kind, sys.argv[1], **{{
    "schedule.max_steps": "3", "optim.batch_size": "8", "optim.grad_accum": sys.argv[3],
    "system.distributed": sys.argv[4], "model.overrides.dropout": "0.0", "model.overrides.attention_dropout": "0.0",
    **extra}}))
pretrain(config, train_set=ToyPretrainingData(kind, size=64), eval_set=ToyPretrainingData(kind, size=32, split="valid"))
"""


@pytest.mark.parametrize("kind", ["mlm_sop", "electra"])
def test_fsdp_with_shared_parameters(tmp_path, kind):
    """ALBERT's one block reused by every layer (kept in the root unit) and ELECTRA's embeddings shared
    by generator and discriminator (both saved, generator in final-generator/).

    ELECTRA's reference is 2-process DDP, not 1 process: each rank samples replacements from its own
    RNG stream, so only the same world size sees the same corrupted inputs."""
    script = tmp_path / "run.py"
    script.write_text(SHARING_SCRIPT.format(tests=str(TESTS)))
    two_ranks = torchrun(tmp_path / "torchrun")
    reference = (two_ranks + [str(script), str(tmp_path / "one"), kind, "1", "ddp"] if kind == "electra"
                 else [sys.executable, str(script), str(tmp_path / "one"), kind, "2", "ddp"])
    one = subprocess.run(reference, capture_output=True, text=True, env=ENV, timeout=180)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(two_ranks + [str(script), str(tmp_path / "two"), kind, "1", "fsdp"],
                         capture_output=True, text=True, env=ENV, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], rel=1e-5)
    for sub in ["final"] + (["final-generator"] if kind == "electra" else []):
        assert_same_weights(tmp_path / "one" / sub, tmp_path / "two" / sub)
        load_model(tmp_path / "two" / sub)
