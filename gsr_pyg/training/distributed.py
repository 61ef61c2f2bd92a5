"""Several processes under ``torchrun``: joining the group, who is who, and the few collectives
the trainer and the scripts need.

Every helper works without ``torchrun`` too: one process is rank 0 of a world of 1, a gather
returns its input and an agreement returns the local decision. So the same code runs in one
process or in many.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

__all__ = [
    "setup_distributed", "is_distributed", "get_rank", "get_world_size", "is_main_process",
    "gather_rows", "agree", "mean_over_processes", "gather_objects", "reduce_stats",
    "barrier", "distributed_loader",
]


def is_distributed() -> bool:
    """Whether this process belongs to an initialised ``torch.distributed`` process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without torchrun)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """How many processes train together (1 without torchrun)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Whether this process is rank 0, the one that writes files and reports."""
    return get_rank() == 0


def setup_distributed(device: str | torch.device | None = None) -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment.

    Returns ``(rank, world_size, device)``. Under ``torchrun`` (``WORLD_SIZE`` > 1) the
    process group is initialised once, with ``nccl`` when the device is CUDA and ``gloo``
    otherwise, and each process gets ``cuda:LOCAL_RANK`` on GPU machines. Without torchrun it
    returns ``(0, 1, device)``: one process, nothing to set up.

    Example:
        >>> setup_distributed("cpu")  # without torchrun
        (0, 1, device(type='cpu'))
    """
    wanted = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not is_distributed():
        return 0, 1, wanted
    if wanted.type == "cuda":
        wanted = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(wanted)
    if not is_distributed():
        torch.distributed.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), wanted


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """The ``rows`` of every process stacked in rank order (each process gives the same
    shape): the current batch of all processes, as one process would see the global batch.

    Example:
        >>> gather_rows(torch.ones(2, 3)).shape  # one process: the rows themselves
        torch.Size([2, 3])
    """
    world = get_world_size()
    if world == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(world)]
    torch.distributed.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def agree(flag: bool, device: torch.device | str = "cpu") -> bool:
    """One decision for all processes: True when any process says True. ``device``: where
    the one-element tensor of the reduction lives (a CUDA device under ``nccl``).

    Example:
        >>> agree(True)
        True
    """
    if get_world_size() == 1:
        return bool(flag)
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over the processes (a new tensor; ``value`` is kept), e.g. the
    loss of the global batch.

    Example:
        >>> mean_over_processes(torch.tensor(2.0))
        tensor(2.)
    """
    if get_world_size() == 1:
        return value
    total = value.clone()
    torch.distributed.all_reduce(total)
    return total / get_world_size()


def gather_objects(obj: Any) -> list[Any]:
    """The picklable ``obj`` of every process, in rank order (``[obj]`` in one process)."""
    world = get_world_size()
    if world == 1:
        return [obj]
    out = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def reduce_stats(stats):
    """A copy of a :class:`~gsr_pyg.learn.CoactivationStats` holding the samples of every
    process (the statistics themselves are kept: each process goes on accumulating its own)."""
    if get_world_size() == 1:
        return stats
    return copy.deepcopy(stats).all_reduce()


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if get_world_size() > 1:
        torch.distributed.barrier()


def distributed_loader(loader, seed: int):
    """The same loader with a :class:`~torch.utils.data.DistributedSampler`: each process gets
    its share of every epoch and the global batch is ``world_size * batch_size``. Loaders that
    are not ``DataLoader`` s, or already sample per process, are returned as they are."""
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_size is None:
        raise ValueError("under torchrun the training loader must be a DataLoader with a "
                         "batch_size (it is re-created with a DistributedSampler)")
    sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler),
                                 seed=seed, drop_last=loader.drop_last)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)
