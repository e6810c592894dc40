"""torchrun integration: read RANK/WORLD_SIZE/LOCAL_RANK, start the process group, wrap the model.

Only torchrun (or anything that sets the same variables) starts multi-process training; a plain
`python -m lmforge pretrain` is a world of one and never touches torch.distributed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("system.device=cuda but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device_name: str) -> tuple[DistInfo, torch.device]:
    """Initialise the process group when launched by torchrun: nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name, info.local_rank)
    if info.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _fully_shard():
    """FSDP2's `fully_shard` (torch >= 2.6 public path; 2.5 kept it under _composable)."""
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard
    return fully_shard


def shard(model: nn.Module) -> nn.Module:
    """FSDP2: each transformer block is its own unit (all-gathered just before it runs, freed after),
    the root holds the rest (embeddings, heads: tied and ELECTRA-shared tensors stay in one unit).
    Blocks reused across layers (ALBERT sharing) stay in the root unit: a unit called several times
    per forward would be gathered and freed once per call for no memory gain."""
    fully_shard = _fully_shard()
    done: set[int] = set()
    for sub in model.modules():  # every backbone (ELECTRA has two) names its units: `shard_units()`
        for unit in sub.shard_units() if callable(getattr(sub, "shard_units", None)) else ():
            if id(unit) not in done:
                done.add(id(unit))
                fully_shard(unit)
    fully_shard(model)
    return model


def _fsdp_module_class() -> type:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        from torch.distributed._composable.fsdp import FSDPModule
    return FSDPModule


def is_sharded(module: nn.Module) -> bool:
    """True for a module `shard` wrapped (asked of the module, not of its parameters: between an
    eval forward and the next backward the root's parameters are temporarily unsharded)."""
    return isinstance(module, _fsdp_module_class())


def reshard(module: nn.Module) -> None:
    """Free every all-gathered unit (the root stays gathered after a forward without backward, e.g.
    evaluation) so that state-dict helpers see the sharded parameters."""
    fsdp_module = _fsdp_module_class()
    for sub in module.modules():
        if isinstance(sub, fsdp_module):
            sub.reshard()


def wrap(model: nn.Module, info: DistInfo, device: torch.device, strategy: str,
         find_unused: bool) -> nn.Module:
    """DDP replicates the model and all-reduces gradients (mean over ranks); FSDP shards parameters,
    gradients and optimizer state across ranks for models that do not fit on one device.

    FSDP replaces the parameters in place with sharded ones, so the optimizer must be built AFTER
    wrapping (and the full weights of a resume loaded BEFORE)."""
    if not info.enabled:
        return model
    if strategy == "fsdp":
        return shard(model)  # FSDP2 averages gradients over ranks by reduce-scatter, as DDP does
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def no_sync(wrapped: nn.Module, info: DistInfo, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce / reduce-scatter on non-final accumulation micro-steps."""
    if sync or not info.enabled:
        return contextlib.nullcontext()
    if isinstance(wrapped, nn.parallel.DistributedDataParallel):
        return wrapped.no_sync()
    return _fsdp_no_sync(wrapped)


@contextlib.contextmanager
def _fsdp_no_sync(wrapped: nn.Module) -> Iterator[None]:
    # FSDP2 keeps unsharded gradients between micro-steps and reduce-scatters on the synced one
    wrapped.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        wrapped.set_requires_gradient_sync(True)


def clip_grad_norm(module: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip by the global norm; under FSDP the norm of the sharded gradients is a replicated DTensor,
    returned here as a plain tensor (the same number on every rank)."""
    norm = torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    full = getattr(norm, "full_tensor", None)
    return full() if full is not None else norm


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
