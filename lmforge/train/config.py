"""Typed pre-training configuration, loaded from YAML + `key=value` overrides with OmegaConf.

The dataclasses are OmegaConf *structured* configs: a misspelt key or a value of the wrong type
is an error naming the key, so a typo never silently trains with a default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmforge.data.pretraining import ObjectiveConfig
from lmforge.objectives.distill import DistillSettings
from lmforge.objectives.electra import ElectraSettings
from lmforge.objectives.registry import objective_class


@dataclass(kw_only=True)
class ModelSection:
    """A preset name (lmforge.config.PRESETS) plus field overrides; vocab/pad come from the data.

    `init_from` (an lmforge or HuggingFace model directory) continues pre-training that model instead:
    its config, weights and tokenizer are used (the preset is ignored), the objective's heads are
    kept where the model has them and initialised where it does not."""

    preset: str = "bert-mini"
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str = ""


@dataclass(kw_only=True)
class DataSection:
    prepared_dir: str = ""  # written by `lmforge prepare`
    tokenizer_dir: str = ""  # copied into the final model dir; "" -> the prepared dir's tokenizer files
    num_workers: int = 0


@dataclass(kw_only=True)
class OptimSection:
    lr: float = 1e-4  # BERT §A.2
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    grad_clip: float = 1.0  # 0 = off
    batch_size: int = 32  # per micro-step, per rank
    grad_accum: int = 1
    # T5: AdamW with each update scaled by the tensor's RMS (Adafactor's relative step; nanoT5), stable at
    # the large learning rates T5 trains with (lmforge.train.adamw_scale)
    scale_by_rms: bool = False


@dataclass(kw_only=True)
class ScheduleSection:
    kind: Literal["linear", "cosine", "constant", "inverse_sqrt"] = "linear"
    warmup: float = 0.01  # fraction of training (steps, or time with a budget)
    min_lr_factor: float = 0.0
    max_steps: int = 0  # optimizer steps; 0 -> epochs * steps per epoch
    epochs: int = 1
    time_budget_minutes: float = 0.0  # cramming: progress = elapsed / budget; > 0 overrides steps


@dataclass(kw_only=True)
class EvalSection:
    every_steps: int = 0  # 0 = only at the end
    max_batches: int = 50
    batch_size: int = 64


@dataclass(kw_only=True)
class CheckpointSection:
    every_steps: int = 0  # 0 = only at the end
    keep_last: int = 2


@dataclass(kw_only=True)
class ExportSection:
    hf: bool = False  # also write <run_dir>/hf, the HuggingFace export of final/ (as `lmforge convert --to-hf`)


@dataclass(kw_only=True)
class SystemSection:
    device: str = "auto"  # auto | cpu | cuda
    # bf16 = autocast over fp32 weights and AdamW state, on CUDA (Ampere+) or a CPU with AVX512-BF16/AMX
    # (an error elsewhere, never a silent fp32 run); auto = bf16 on such a GPU, fp32 on CPU (why:
    # lmforge.train.trainer.resolve_precision)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun
    log_every: int = 10
    progress_bar: bool = True
    threads: int = 0  # torch.set_num_threads; 0 = leave as is


@dataclass(kw_only=True)
class PretrainConfig:
    run_dir: str = "runs/pretrain"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    electra: ElectraSettings = field(default_factory=ElectraSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    eval: EvalSection = field(default_factory=EvalSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    export: ExportSection = field(default_factory=ExportSection)
    system: SystemSection = field(default_factory=SystemSection)


def _structured_error(source: str, err: OmegaConfBaseException) -> ValueError:
    key = getattr(err, "full_key", None)
    message = str(err).splitlines()[0]
    return ValueError(f"{source}: {'key ' + repr(key) + ': ' if key else ''}{message}")


T = TypeVar("T")

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"  # shipped inside the package


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(path: str | Path) -> Path:
    """A YAML file, or the name of a recipe shipped with lmforge (`bert`, `gpt`, ...), so that
    `--config bert` works from any directory. A file of that name in the working directory wins."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name}.yaml"
    if path.parent == Path(".") and path.suffix == "" and shipped.is_file():
        return shipped
    raise FileNotFoundError(f"{path}: config file not found (shipped recipes: {', '.join(recipe_names())})")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> PretrainConfig:
    """YAML file (or shipped recipe name), then dotted `key=value` overrides (e.g. `optim.lr=3e-4
    data.prepared_dir=...`).

    Relative data paths in the YAML stay relative to the working directory (where the user runs
    the command), as the README's commands show them.
    """
    config = load_structured(PretrainConfig, None if path is None else resolve_recipe(path), overrides)
    validate(config)
    return config


def load_structured(schema: type[T], path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                    values: dict[str, Any] | None = None) -> T:
    """The one config system of `pretrain` and `finetune`: a typed dataclass, filled from a YAML file,
    then `key=value` overrides, then `values` (command-line flags that were given). A misspelt key or
    a wrong type is an error naming the key and where it came from."""
    merged = OmegaConf.structured(schema)
    if path is not None:
        try:
            loaded = OmegaConf.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: config file not found") from None
        except Exception as err:  # yaml.YAMLError carries the line in its message
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        try:
            merged = OmegaConf.merge(merged, loaded)
        except OmegaConfBaseException as err:
            raise _structured_error(str(path), err) from None
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected key=value")
    try:
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        if values:
            merged = OmegaConf.merge(merged, OmegaConf.create(values))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ValueError(f"{schema.__name__}: no value for {', '.join(missing)} (give them in the config file, "
                             "as key=value or as flags)")
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        raise _structured_error("overrides" if not values else "overrides/flags", err) from None


def validate(config: PretrainConfig) -> None:
    """Cross-field checks that types alone cannot express."""
    if config.optim.batch_size < 1 or config.optim.grad_accum < 1:
        raise ValueError("optim.batch_size and optim.grad_accum must be >= 1")
    if not 0.0 <= config.schedule.warmup < 1.0:
        raise ValueError(f"schedule.warmup {config.schedule.warmup} must be a fraction in [0, 1)")
    if config.schedule.kind == "inverse_sqrt" and config.schedule.warmup <= 0:
        raise ValueError("schedule.kind inverse_sqrt needs schedule.warmup > 0 (its peak is at the end of warmup)")
    if config.schedule.max_steps <= 0 and config.schedule.epochs <= 0 and config.schedule.time_budget_minutes <= 0:
        raise ValueError("set schedule.max_steps, schedule.epochs or schedule.time_budget_minutes")
    if getattr(objective_class(config.objective.kind), "needs_teacher", False) and config.model.init_from:
        raise ValueError(f"objective {config.objective.kind} starts the student from distill.teacher; "
                         f"drop model.init_from={config.model.init_from}")


def to_yaml(config: PretrainConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: PretrainConfig, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_yaml(config))
    os.replace(tmp, path)
