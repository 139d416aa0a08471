"""Where this process stands in a data-parallel run: rank, world size, cross-process means.

One answer for every caller. Before the process group exists (while a run is prepared,
before `transformers.Trainer` initialises Accelerate) the launcher's environment says it:
`torchrun` and `accelerate launch` set RANK and WORLD_SIZE. Once the group is initialised,
it is asked directly. Run without a launcher, the process is rank 0 of 1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


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


def fsdp_requested(args: Any = None) -> bool:
    """True when the launcher (`accelerate launch` with an FSDP config) or the TrainingArguments ask for FSDP."""
    from_env = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return from_env or bool(getattr(args, "fsdp_plugin_args", None))


def enable_fsdp_on_cpu(accelerator: Any, args: Any) -> bool:
    """Turn a CPU data-parallel Accelerator (gloo, `MULTI_CPU`) into an FSDP one when FSDP was asked for.

    Accelerate 1.15 selects FSDP only on GPU-class devices: with `use_cpu` (which Prospect sets
    for several processes without a GPU) it falls back to DDP without a word, so an FSDP config
    would silently train replicated. FSDP-2 (`fully_shard`) itself runs over gloo on CPU, so
    the state is switched to FSDP with the plugin the launcher's environment (or
    `args.fsdp_plugin_args`) describes. Returns True when it switched.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if accelerator.distributed_type != DistributedType.MULTI_CPU or not fsdp_requested(args):
        return False
    plugin_args = getattr(args, "fsdp_plugin_args", None) or {}
    plugin = FullyShardedDataParallelPlugin(**plugin_args)
    state = accelerator.state
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # both views of the state
    state.fsdp_plugin = plugin
    return True


def gathered_parameters(module: Any) -> contextlib.AbstractContextManager[Any]:
    """Context in which a DeepSpeed ZeRO-3 module holds its full parameters on every process.

    ZeRO-3 (with `zero3_init_flag`, or once DeepSpeed has wrapped the model) keeps only a
    shard of each weight in a process (`param.ds_id`; the tensor itself is empty). Code that
    reads the weights outside DeepSpeed's forward hooks -- the reference log-probs precomputed
    before training, the base-weights fingerprint -- runs inside this context (a collective:
    every process enters it). A no-op for other modules.
    """
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def on_main_then_shared(compute: Callable[[], T]) -> T:
    """`compute()` on the main process only; its result (picklable) is sent to every other process.

    Several processes would otherwise each compute (and write to a shared cache) the same
    value: reference log-probs are computed once and every process trains on the same numbers.
    """
    group = _group()
    if group is None or group.get_world_size() == 1:
        return compute()
    box: list[Any] = [compute() if group.get_rank() == 0 else None]
    group.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def main_process_first() -> Any:
    """The block runs on the main process first, then on the others (which then find its caches).

    For work each process needs but that writes a shared cache (tokenized data): without it,
    processes started together write the same cache entry at once, and one may read a half-made one.
    """
    group = _group()
    several = group is not None and group.get_world_size() > 1
    if several and group.get_rank() != 0:
        group.barrier()
    try:
        yield
    finally:
        if several and group.get_rank() == 0:
            group.barrier()


def distributed_note(trainer: Any) -> dict[str, Any]:
    """What ran the training, for results.json: {"engine": ddp | fsdp2 | fsdp1 | deepspeed_zero<N> | single, "processes": N}."""
    from accelerate.utils import DistributedType

    acc = trainer.accelerator
    kind = acc.distributed_type
    if kind == DistributedType.DEEPSPEED:
        engine = f"deepspeed_zero{acc.state.deepspeed_plugin.zero_stage}"
    elif kind == DistributedType.FSDP:
        engine = "fsdp2" if acc.is_fsdp2 else "fsdp1"
    else:
        engine = "ddp" if acc.num_processes > 1 else "single"
    return {"engine": engine, "processes": int(acc.num_processes)}


def concat_across_processes(values: dict[str, list[float]]) -> dict[str, list[float]]:
    """Every process's lists joined per key (process 0's first): the per-batch metrics of the whole run.

    A collective: every process calls it at the same point (each logging step and evaluation).
    """
    group = _group()
    if group is None or group.get_world_size() == 1:
        return values
    every: list[Any] = [None] * group.get_world_size()
    group.all_gather_object(every, {k: list(v) for k, v in values.items()})
    out: dict[str, list[float]] = {}
    for d in every:
        for k, v in d.items():
            out.setdefault(k, []).extend(v)
    return out
