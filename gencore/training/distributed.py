"""Multi-process training: the process group from torchrun's environment, and small helpers the
Trainer uses (rank-0-only side effects, loss averaging). Gloo on CPU, NCCL on CUDA.

`torchrun --nproc_per_node=N -m gencore train ...` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `gencore train --nproc N` starts that same command. A single process (no WORLD_SIZE, or 1)
never touches torch.distributed.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# A peer that died or hangs makes the others fail after this many seconds instead of waiting forever
# (torchrun also stops the whole job when one worker exits with an error).
DEFAULT_TIMEOUT_S = 300


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


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def setup(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes (gloo for CPU devices, NCCL for CUDA); a no-op for one
    process. An already initialized default group is used as it is."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    timeout = float(os.environ.get("GENCORE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average(values: dict[str, torch.Tensor], weight: float, device) -> dict[str, float]:
    """Weighted mean over ranks of scalar tensors (weight: this rank's sample count), in ONE all_reduce."""
    keys = sorted(values)
    t = torch.stack([values[k].detach().float().reshape(()) * weight for k in keys] +
                    [torch.tensor(float(weight), device=device)]).to(device)
    dist.all_reduce(t)
    total = max(float(t[-1]), 1e-12)
    return {k: float(t[i]) / total for i, k in enumerate(keys)}
