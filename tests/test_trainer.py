"""The pre-training loop on a tiny in-memory dataset that follows the data contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pretrain_toy import ToyPretrainingData, tiny_overrides

from lmforge.models import load_model
from lmforge.pretrain import pretrain
from lmforge.train.config import PretrainConfig, load_config
from lmforge.train.distributed import DistInfo
from lmforge.train.trainer import epoch_order, micro_batches

REPO = Path(__file__).resolve().parent.parent


def run(kind: str, tmp_path: Path, size: int = 96, **extra: str):
    config = load_config(None, tiny_overrides(kind, str(tmp_path / "run"), **extra))
    train_set = ToyPretrainingData(kind, size=size)
    eval_set = ToyPretrainingData(kind, size=32, split="valid")
    return config, pretrain(config, train_set=train_set, eval_set=eval_set)


def losses(result) -> list[float]:
    return [r["loss"] for r in result.history if "loss" in r]


# ------------------------------------------------------------------------------------ config
def test_unknown_key_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n  lerning_rate: 3\n")
    with pytest.raises(ValueError, match="lerning_rate"):
        load_config(bad)
    with pytest.raises(ValueError, match="not_a_key"):
        load_config(None, ["schedule.not_a_key=1"])
    with pytest.raises(ValueError, match="kind"):
        load_config(None, ["objective.kind=nonsense"])
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["optim.lr"])


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    config = load_config(path, ["data.prepared_dir=/elsewhere"])
    assert isinstance(config, PretrainConfig)
    assert config.data.prepared_dir == "/elsewhere"


def test_recipes_match_their_papers():
    recipes = {p.stem: load_config(p) for p in (REPO / "configs").glob("*.yaml")}
    assert recipes["bert"].objective.kind == "mlm_nsp"
    assert recipes["roberta"].objective.kind == "mlm" and recipes["roberta"].objective.dynamic_masking
    assert recipes["albert"].objective.kind == "mlm_sop"
    assert recipes["electra"].objective.kind == "electra" and recipes["electra"].electra.disc_weight == 50.0
    assert recipes["gpt"].objective.kind == "clm"
    assert recipes["quickstart"].objective.kind == "mlm_nsp" and recipes["quickstart"].model.preset == "bert-mini"
    assert recipes["elmo"].objective.kind == "bilm" and recipes["elmo"].model.preset == "elmo-cpu"


# ------------------------------------------------------------------------------------ data order
def test_ranks_and_accumulation_partition_the_same_global_batch():
    one = micro_batches(100, 3, 1, 0, batch=4, accum=2, info=DistInfo(0, 1, 0))
    rank0 = micro_batches(100, 3, 1, 0, batch=4, accum=1, info=DistInfo(0, 2, 0))
    rank1 = micro_batches(100, 3, 1, 0, batch=4, accum=1, info=DistInfo(1, 2, 1))
    assert one[0::2] == rank0 and one[1::2] == rank1
    flat = [i for b in one for i in b]
    assert len(set(flat)) == len(flat) == 96  # each example once, the incomplete batch dropped
    assert epoch_order(100, 3, 1).tolist() != epoch_order(100, 3, 2).tolist()  # reshuffled per epoch
    assert micro_batches(100, 3, 1, 5, 4, 2, DistInfo()) == one[10:]  # resume skips, same order


# ------------------------------------------------------------------------------------ loop
def test_mlm_nsp_learns_and_writes_a_complete_run_dir(tmp_path):
    config, result = run("mlm_nsp", tmp_path, **{"schedule.max_steps": "40", "checkpoint.every_steps": "10",
                                                  "eval.every_steps": "15"})
    curve = losses(result)
    assert len(curve) == 40
    assert sum(curve[-5:]) / 5 < 0.9 * sum(curve[:5]) / 5, curve
    run_dir = Path(config.run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 41))
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [15, 30, 40]
    for key in ("eval_mlm_accuracy", "eval_mlm_perplexity", "eval_nsp_accuracy"):
        assert 0.0 <= evals[-1][key] and (key.endswith("perplexity") or evals[-1][key] <= 1.0)
    assert evals[-1]["eval_mlm_perplexity"] == pytest.approx(torch.tensor(evals[-1]["eval_mlm_loss"]).exp().item())
    # warmup then linear decay
    lrs = [r["lr"] for r in records]
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[10]
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["step-0000030", "step-0000040"]  # keep_last = 2
    assert (run_dir / "loss.png").stat().st_size > 1000
    assert any((run_dir / "tensorboard").iterdir())
    assert load_config(run_dir / "config.yaml") == config
    final = load_model(run_dir / "final")
    assert set(final.heads) == {"mlm", "nsp"}
    saved = load_model(run_dir / "checkpoints" / "step-0000040")
    for (name, a), b in zip(final.state_dict().items(), saved.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", ["mlm", "mlm_sop", "clm"])
def test_each_objective_trains(kind, tmp_path):
    _, result = run(kind, tmp_path, **{"schedule.max_steps": "40"})
    curve = losses(result)
    assert sum(curve[-5:]) / 5 < 0.9 * sum(curve[:5]) / 5, curve
    last = result.history[-1]
    expected = {"mlm": "eval_mlm_accuracy", "mlm_sop": "eval_sop_accuracy", "clm": "eval_perplexity"}[kind]
    assert expected in last
    heads = set(load_model(result.final_dir).heads)
    assert heads == {"mlm": {"mlm"}, "mlm_sop": {"mlm", "sop"}, "clm": {"lm"}}[kind]


def test_time_budget_drives_the_schedule(tmp_path):
    config, result = run("mlm", tmp_path, **{"schedule.max_steps": "0", "schedule.epochs": "0",
                                              "schedule.time_budget_minutes": "0.02", "schedule.warmup": "0.0"})
    records = [r for r in result.history if "lr" in r]
    assert result.state.elapsed >= 0.02 * 60
    assert records[-1]["lr"] < 0.5 * records[0]["lr"]  # linear decay with elapsed / budget


def test_too_small_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fewer than one global batch"):
        run("mlm", tmp_path, size=4)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    config = load_config(None, tiny_overrides("mlm", str(tmp_path / "run")))
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        pretrain(config, resume=True, train_set=ToyPretrainingData("mlm"))
