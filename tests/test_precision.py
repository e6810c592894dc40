"""bf16 autocast in pre-training and fine-tuning: it really runs in bf16, the weights and AdamW state
stay fp32, the loss curve tracks fp32, and bf16 without hardware support is an error, not fp32."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from pretrain_toy import ToyPretrainingData, tiny_overrides

from lmforge.finetune import _autocast
from lmforge.models import load_model
from lmforge.pretrain import pretrain
from lmforge.train import checkpoint as ckpt
from lmforge.train import precision as precision_rules
from lmforge.train import trainer
from lmforge.train.config import load_config

CPU = torch.device("cpu")


def run(tmp_path: Path, precision: str, kind: str = "clm", steps: int = 30):
    config = load_config(None, tiny_overrides(kind, str(tmp_path / precision), **{
        "schedule.max_steps": str(steps), "system.precision": precision}))
    result = pretrain(config, train_set=ToyPretrainingData(kind, size=96))
    return result, [r["loss"] for r in result.history if "loss" in r]


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Treat this CPU as bf16-capable: without AVX512-BF16/AMX autocast still computes in bf16
    (emulated, slower), so the numerics under test are the same on every CI machine."""
    monkeypatch.setattr(precision_rules, "native_bf16", lambda device_type: True)


def test_bf16_pretraining_tracks_fp32_with_fp32_master_weights(tmp_path, bf16_cpu):
    dtypes: Counter = Counter()

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            dtypes[output.dtype] += 1

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        bf16, bf16_curve = run(tmp_path, "bf16")
    finally:
        hook.remove()
    assert dtypes[torch.bfloat16] > 0 and dtypes[torch.float32] == 0, dtypes  # every matmul ran in bf16
    fp32, fp32_curve = run(tmp_path, "fp32")
    assert len(bf16_curve) == len(fp32_curve) == 30
    assert bf16_curve != fp32_curve  # bf16 changed the arithmetic ...
    # ... by rounding only: one bf16 rounding is 2^-9 = 0.2% relative, and the first loss (same
    # weights, same batch) differs by less than that; afterwards fp32 master weights keep the drift
    # to a few roundings (measured: at most 0.12% over these 30 steps), so 1% per step is a bound
    # with an 8x margin that still fails a run whose curve departs from fp32 (it falls ~60% here).
    assert bf16_curve[0] == pytest.approx(fp32_curve[0], rel=2**-9)
    for step, (b, f) in enumerate(zip(bf16_curve, fp32_curve), start=1):
        assert b == pytest.approx(f, rel=0.01), (step, b, f)
    assert sum(fp32_curve[-5:]) < 0.7 * sum(fp32_curve[:5])  # the run learned, so the band is not trivially met
    # the master copy: weights and AdamW moments stay fp32
    assert all(p.dtype == torch.float32 for p in load_model(bf16.final_dir).parameters())
    state = ckpt.load_trainer_state(ckpt.latest_checkpoint(Path(bf16.final_dir).parent / "checkpoints"))
    moments = [v for s in state["optimizer"]["state"].values() for k, v in s.items() if k.startswith("exp_avg")]
    assert moments and all(m.dtype == torch.float32 for m in moments)


def test_bf16_without_hardware_support_is_an_error_not_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(precision_rules, "native_bf16", lambda device_type: False)
    with pytest.raises(ValueError, match="precision=bf16: .*no native bf16"):
        run(tmp_path, "bf16", steps=2)
    with pytest.raises(ValueError, match="no native bf16"):
        _autocast(CPU, True)  # fine-tuning's --bf16
    assert trainer.resolve_precision(torch.device("cuda"), "auto") == "fp32"  # a GPU without bf16


def test_cpu_bf16_is_opt_in_and_fine_tuning_follows_the_same_rule(bf16_cpu):
    assert trainer.resolve_precision(CPU, "bf16") == "bf16"
    assert trainer.resolve_precision(CPU, "auto") == "fp32"  # even on a bf16 CPU: same results on every CPU
    assert trainer.resolve_precision(torch.device("cuda"), "auto") == "bf16"  # a GPU with native bf16
    with pytest.raises(ValueError, match="unknown precision"):
        trainer.resolve_precision(CPU, "fp16")
    with _autocast(CPU, True):  # fine-tuning's --bf16
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    for flag in (None, False):
        with _autocast(CPU, flag):
            assert not torch.is_autocast_enabled("cpu")
