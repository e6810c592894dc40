"""The pre-training loop: one readable function in the nanoGPT spirit, plus its small helpers.

Data order is a pure function of (seed, epoch): each epoch's permutation comes from a generator
seeded with both, the global batch of step s is the slice [s*G, (s+1)*G) of it, and micro-batch a
of rank r is chunk r*accum + a of that slice. So 1 process with accum=k and k processes with
accum=1 see the same examples per step, and a resume only has to skip to (epoch, step).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lmforge.heads import Head, HeadOutput
from lmforge.models import TaskModel
from lmforge.train import checkpoint as ckpt
from lmforge.train.config import PretrainConfig, save_config, to_yaml
from lmforge.train.distributed import DistInfo, all_reduce_mean, barrier, clip_grad_norm, no_sync, wrap
from lmforge.train.logger import RunLogger
from lmforge.train.models import find_unused_parameters
from lmforge.train.optim import build_optimizer, lr_factor, set_lr

StepCallback = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    step_in_epoch: int = 0  # global batches of `epoch` already consumed
    elapsed: float = 0.0  # training seconds, carried across resumes (time budgets)
    tokens: int = 0  # real (non-padding) tokens seen, all ranks

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TrainResult:
    state: TrainState
    final_dir: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def micro_batches(n: int, seed: int, epoch: int, start_step: int, batch: int, accum: int,
                  info: DistInfo) -> list[list[int]]:
    """This rank's micro-batches from global step `start_step` to the end of the epoch."""
    order = epoch_order(n, seed, epoch).tolist()
    global_batch = batch * accum * info.world_size
    out = []
    for step in range(start_step, n // global_batch):
        base = step * global_batch
        for a in range(accum):
            chunk = base + (info.rank * accum + a) * batch
            out.append(order[chunk:chunk + batch])
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether the device multiplies bf16 matrices in hardware: CUDA compute capability >= 8
    (Ampere on), x86 CPUs with AVX512-BF16 or AMX, other CPUs where oneDNN has bf16 kernels. Elsewhere
    autocast still runs, but emulated bf16 is slower than fp32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type != "cpu":
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(device: torch.device, precision: str) -> str:
    """"auto" -> bf16 on a GPU with native bf16, else fp32; CPU bf16 is asked for explicitly. On an
    AVX512-BF16 CPU it tracks fp32 (tests/test_precision.py) and trained bert-mini MLM 1.7x faster
    at 1 thread, but the gain shrank to 1.1x at 2 threads on a loaded machine, and a default that
    depends on the CPU model would make results and tests differ between machines. An explicit "bf16"
    on a device without native bf16 is an error rather than a silent fp32 (or emulated) run."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and native_bf16("cuda") else "fp32"
    if precision == "bf16" and not native_bf16(device.type):
        what = "GPU" if device.type == "cuda" else f"{device.type} ({platform.machine()})"
        raise ValueError(f"precision=bf16: this {what} has no native bf16 matrix units (CPU: AVX512-BF16 or "
                         "AMX; CUDA: compute capability 8.0+); use precision=fp32 or precision=auto")
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {precision!r}: auto, fp32 or bf16")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA or CPU: weights, gradients and AdamW state stay fp32 (the master copy);
    matmuls and attention run in bf16, reductions, norms and the loss's softmax in fp32."""
    if resolve_precision(device, precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Counts:
    """Sums for evaluation metrics, reduced over ranks before dividing."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def reduce(self, info: DistInfo, device: torch.device) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.tensor([self.sums[k] for k in keys], dtype=torch.float64, device=device)
        values = all_reduce_mean(values, info) * info.world_size
        return dict(zip(keys, values.tolist()))


def output_heads(models: dict[str, TaskModel]) -> dict[str, Head]:
    """The heads behind the names in `ModelOutput.heads`, gathered from the saved models (a composite
    such as ELECTRA reports its generator's and its discriminator's heads side by side)."""
    heads: dict[str, Head] = {}
    for model in models.values():
        for name, head in model.heads.items():
            if name in heads:
                raise ValueError(f"two pre-training models both have a head named {name!r}")
            heads[name] = head
    return heads


def head_counts(counts: Counts, outputs: dict[str, HeadOutput], heads: dict[str, Head]) -> None:
    """Each head's metric numerators/denominators for this batch."""
    for name, out in outputs.items():
        if name in heads and out.labels is not None and out.loss is not None:
            for key, value in heads[name].metric_counts(name, out).items():
                counts.add(key, value)


def metrics_from_counts(sums: dict[str, float], prefix: str, heads: dict[str, Head]) -> dict[str, float]:
    out: dict[str, float] = {}
    if sums.get("loss_n"):
        out[f"{prefix}loss"] = sums["loss"] / sums["loss_n"]
    for name, head in heads.items():
        out.update({prefix + key: value for key, value in head.metrics(name, sums).items()})
    return out


@torch.no_grad()
def evaluate(module: nn.Module, dataset: Dataset, config: PretrainConfig, info: DistInfo,
             device: torch.device, heads: dict[str, Head]) -> dict[str, float]:
    """Held-out metrics over the first `eval.max_batches` batches, split across ranks.

    Runs under a forked RNG so evaluating (ELECTRA samples) never changes the training stream.
    """
    was_training = module.training
    module.eval()
    size = config.eval.batch_size
    n = min(len(dataset), size * config.eval.max_batches)
    batches = [list(range(i, min(i + size, n))) for i in range(0, n, size)][info.rank::info.world_size]
    counts = Counts()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        for indices in batches:
            batch = to_device(dataset.collate([dataset[i] for i in indices]), device)
            with autocast(device, config.system.precision):
                out = module(**batch)
            counts.add("loss", out.loss.item() * len(indices))
            counts.add("loss_n", len(indices))
            head_counts(counts, out.heads, heads)
    module.train(was_training)
    return metrics_from_counts(counts.reduce(info, device), "eval_", heads)


def total_steps(config: PretrainConfig, steps_per_epoch: int) -> int | None:
    """Optimizer steps to run; None when only the wall-clock budget decides."""
    if config.schedule.max_steps > 0:
        return config.schedule.max_steps
    if config.schedule.time_budget_minutes > 0:
        return None
    return config.schedule.epochs * steps_per_epoch


def train(config: PretrainConfig, module: nn.Module, models: dict[str, TaskModel], train_set: Dataset,
          eval_set: Dataset | None, info: DistInfo, device: torch.device, *, resume: bool = False,
          callbacks: tuple[StepCallback, ...] = (), tokenizer_files: tuple[Path, ...] = ()) -> TrainResult:
    run_dir = Path(config.run_dir)
    ckpt_root = run_dir / "checkpoints"
    opt_cfg, sched = config.optim, config.schedule
    global_batch = opt_cfg.batch_size * opt_cfg.grad_accum * info.world_size
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch == 0:
        raise ValueError(f"training set has {len(train_set)} examples, fewer than one global batch "
                         f"({global_batch} = batch_size x grad_accum x world_size)")
    total = total_steps(config, steps_per_epoch)
    budget = sched.time_budget_minutes * 60.0
    precision = resolve_precision(device, config.system.precision)  # before any work: bf16 or a clear error
    if info.is_main:
        print(f"pretrain: precision {precision}" + (" (autocast; fp32 weights and AdamW state)" if precision == "bf16"
                                                     else "") + f", from system.precision={config.system.precision}")

    module.to(device)
    state = TrainState()
    resumed_from = None
    if resume:
        resumed_from = ckpt.latest_checkpoint(ckpt_root)
        if resumed_from is None:
            raise FileNotFoundError(f"{ckpt_root}: --resume given but there is no complete checkpoint")
        saved = ckpt.load_trainer_state(resumed_from)
        if saved.get("config_yaml") != to_yaml(config):
            print(f"warning: resuming {resumed_from} with a config that differs from the one it was saved with")
        ckpt.load_models(resumed_from, models)  # full weights, before FSDP shards them
        state = TrainState(**saved["train_state"])
    run_dir.mkdir(parents=True, exist_ok=True)
    heads = output_heads(models)  # before wrapping: FSDP swaps the module classes
    wrapped = wrap(module, info, device, config.system.distributed,
                   find_unused=find_unused_parameters(config, models))
    # after wrapping: FSDP replaces the parameters with its shards
    optimizer = build_optimizer(module, opt_cfg.lr, opt_cfg.weight_decay, (opt_cfg.beta1, opt_cfg.beta2), opt_cfg.eps,
                                scale_by_rms=opt_cfg.scale_by_rms)
    if resumed_from is not None:
        ckpt.load_optimizer_state(module, optimizer, saved["optimizer"])
    forward = torch.compile(wrapped) if config.system.compile else wrapped
    logger = None
    if info.is_main:
        save_config(config, run_dir / "config.yaml")
        logger = RunLogger(run_dir, resume_step=state.step if resumed_from else None)
    if resumed_from is not None:
        ckpt.set_rng_state(ckpt.load_rank_rng(resumed_from, info.rank))  # last: nothing may draw after it

    def progress() -> float:
        if budget > 0:
            return state.elapsed / budget
        return state.step / total

    def done() -> bool:
        if total is not None and state.step >= total:
            return True
        if budget > 0:
            flag = torch.tensor([float(state.elapsed >= budget)], device=device)
            return bool(all_reduce_mean(flag, info).item() > 0)  # every rank stops at the same step
        return False

    def save_checkpoint() -> None:
        tmp = ckpt.begin(ckpt_root, state.step) if info.is_main else ckpt_root / f".tmp-step-{state.step:07d}"
        barrier(info)
        ckpt.write_rank_rng(tmp, info.rank)
        states = ckpt.full_states(module, models, info.is_main)  # collectives under FSDP: every rank
        optimizer_state = ckpt.optimizer_state(module, optimizer)
        barrier(info)
        if info.is_main:
            ckpt.write_models(tmp, models, states)
            ckpt.commit(tmp, ckpt_root, state.step, {
                "optimizer": optimizer_state, "train_state": state.to_dict(),
                "config_yaml": to_yaml(config), "world_size": info.world_size,
            }, config.checkpoint.keep_last)
        barrier(info)

    # with a wall-clock budget the step count is unknown: show steps and rate, and the time left
    bar = tqdm(total=None if budget > 0 else total, initial=state.step, disable=not (info.is_main and config.system.progress_bar),
               dynamic_ncols=True, desc="pretrain")
    history: list[dict[str, Any]] = []
    module.train()
    start = time.perf_counter() - state.elapsed
    window_tokens, window_start = 0, time.perf_counter()
    while not done():
        train_set.set_epoch(state.epoch)
        loader = DataLoader(
            train_set,
            batch_sampler=micro_batches(len(train_set), config.seed, state.epoch, state.step_in_epoch,
                                        opt_cfg.batch_size, opt_cfg.grad_accum, info),
            collate_fn=train_set.collate, num_workers=config.data.num_workers,
            generator=torch.Generator().manual_seed(config.seed),  # never draw from the global RNG
            pin_memory=device.type == "cuda",
        )
        micro = iter(loader)
        while state.step_in_epoch < steps_per_epoch and not done():
            lr = set_lr(optimizer, opt_cfg.lr, lr_factor(progress(), sched.warmup, sched.kind, sched.min_lr_factor))
            loss_sum = torch.zeros((), device=device)
            counts = Counts()
            tokens = 0
            for a in range(opt_cfg.grad_accum):
                batch = to_device(next(micro), device)
                tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
                last = a == opt_cfg.grad_accum - 1
                with no_sync(wrapped, info, sync=last):
                    with autocast(device, precision):
                        out = forward(**batch)
                    (out.loss / opt_cfg.grad_accum).backward()
                loss_sum += out.loss.detach()
                with torch.no_grad():
                    head_counts(counts, out.heads, heads)
            grad_norm = clip_grad_norm(module, opt_cfg.grad_clip) if opt_cfg.grad_clip > 0 else None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.step_in_epoch += 1
            state.elapsed = time.perf_counter() - start
            if info.enabled:  # exact global count (ranks pad differently); one scalar per step
                tokens = int(round(all_reduce_mean(torch.tensor([float(tokens)], device=device), info).item()
                                   * info.world_size))
            window_tokens += tokens
            state.tokens += tokens
            bar.update(1)

            record: dict[str, Any] = {"step": state.step}
            if state.step % config.system.log_every == 0 or state.step == 1 or done():
                loss = all_reduce_mean(loss_sum / opt_cfg.grad_accum, info).item()
                now = time.perf_counter()
                record.update(loss=loss, lr=lr, epoch=state.epoch, tokens=state.tokens,
                              tokens_per_s=window_tokens / max(now - window_start, 1e-9),
                              elapsed_s=state.elapsed)
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                record.update(metrics_from_counts(counts.reduce(info, device), "train_", heads))
                record.pop("train_loss", None)
                window_tokens, window_start = 0, now
                left = {"left": f"{max(budget - state.elapsed, 0) / 60:.1f}min"} if budget > 0 else {}
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", **left)
            final = done()
            if eval_set is not None and ((config.eval.every_steps and state.step % config.eval.every_steps == 0)
                                         or final):
                record.update(evaluate(wrapped, eval_set, config, info, device, heads))
            if len(record) > 1:
                history.append(record)
                if logger is not None:
                    logger.log(record)
            if (config.checkpoint.every_steps and state.step % config.checkpoint.every_steps == 0) or final:
                save_checkpoint()
            for callback in callbacks:
                callback(state.step, record)
        if state.step_in_epoch >= steps_per_epoch:
            state.epoch += 1
            state.step_in_epoch = 0
    bar.close()

    final_dir = None
    states = ckpt.full_states(module, models, info.is_main)  # a collective under FSDP
    if info.is_main:
        final_dir = save_final(run_dir, models, tokenizer_files, states)
        assert logger is not None
        logger.plot()
        logger.close()
    barrier(info)
    return TrainResult(state=state, final_dir=final_dir, history=history)


def save_final(run_dir: Path, models: dict[str, TaskModel], tokenizer_files: tuple[Path, ...],
               states: dict[str, dict] | None = None) -> Path:
    """`final/` is the trained model (the discriminator for ELECTRA) with its tokenizer beside it, ready
    for fine-tuning or `lmforge convert --to-hf`; other sub-models go to `final-<name>/`."""
    import shutil

    final = run_dir / "final"
    for sub, model in models.items():
        target = final if not sub else run_dir / f"final-{sub}"
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        ckpt.write_models(tmp, {"": model}, None if states is None else {"": states[sub]})
        for path in tokenizer_files:
            shutil.copy2(path, tmp / path.name)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return final
