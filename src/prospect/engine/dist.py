"""Where this process stands in a data-parallel run: rank, world size, cross-process means.

One answer for every caller. Before the process group exists (while a run is prepared,
before `transformers.Trainer` initialises Accelerate) the launcher's environment says it:
`torchrun` and `accelerate launch` set RANK and WORLD_SIZE. Once the group is initialised,
it is asked directly. Run without a launcher, the process is rank 0 of 1.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor


def _group() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    """Processes in this run (1 when run directly)."""
    group = _group()
    if group is not None:
        return int(group.get_world_size())
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's global rank (0 when run directly)."""
    group = _group()
    if group is not None:
        return int(group.get_rank())
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """True on the process that writes the run directory's files (rank 0)."""
    return rank() == 0


def distributed_mean(x: Tensor) -> Tensor:
    """Mean of a tensor across data-parallel processes (itself in a single process)."""
    group = _group()
    if group is None or group.get_world_size() == 1:
        return x
    y = x.detach().clone().float()
    group.all_reduce(y)
    return (y / group.get_world_size()).to(x.dtype)


def has_accelerator() -> bool:
    """True when torch sees a GPU-class accelerator (CUDA, ROCm, XPU, MPS)."""
    acc = getattr(torch, "accelerator", None)
    if acc is not None and hasattr(acc, "is_available"):
        return bool(acc.is_available())
    return torch.cuda.is_available()
