"""The training batches, epoch after epoch, and the random-number state that makes a resumed run
draw exactly what an uninterrupted one draws."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

__all__ = ["rng_state", "set_rng_state", "seed_everything", "BatchStream", "to_device", "to_cpu"]


def rng_state() -> dict:
    """The global states of torch (and CUDA), numpy and ``random``, as tensors and plain
    containers (readable with ``torch.load(..., weights_only=True)``)."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned.

    Example:
        >>> saved = rng_state()
        >>> first = torch.rand(2)
        >>> set_rng_state(saved)
        >>> torch.equal(torch.rand(2), first)
        True
    """
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and ``random`` (a fresh run's first draws)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def to_device(batch, device: torch.device):
    """A batch (a tensor or a list/tuple of them) on ``device``; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch


def to_cpu(value):
    """Tensors inside dicts, lists and tuples moved to the CPU (for a checkpoint that every
    process gathers); anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


class BatchStream:
    """Batches of a loader forever, epoch after epoch, with the position saved.

    The global random state at the start of each epoch is saved with the position, so a
    resumed run draws the shuffled order of an interrupted epoch again identically, skips
    the batches already trained, and then goes on with the random state it had.

    Example:
        >>> stream = BatchStream()
        >>> batches = stream.batches([1, 2, 3])
        >>> [next(batches) for _ in range(4)], stream.epoch, stream.batch_in_epoch
        ([1, 2, 3, 1], 1, 1)
    """

    def __init__(self):
        self.epoch = 0
        self.batch_in_epoch = 0
        self._epoch_rng: dict | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "epoch_rng": self._epoch_rng}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self._epoch_rng = state["epoch_rng"]

    def batches(self, loader: Iterable) -> Iterator:
        """Yield the batches of ``loader`` from the saved position on, forever."""
        resume_skip = self.batch_in_epoch
        while True:
            current = rng_state()
            if resume_skip and self._epoch_rng is not None:
                set_rng_state(self._epoch_rng)
            else:
                self._epoch_rng = current
            if isinstance(getattr(loader, "sampler", None), DistributedSampler):
                loader.sampler.set_epoch(self.epoch)
            iterator = iter(loader)
            if resume_skip:
                for _ in range(resume_skip):
                    next(iterator)
                set_rng_state(current)
            count = resume_skip
            resume_skip = 0
            for batch in iterator:
                count += 1
                self.batch_in_epoch = count
                yield batch
            if count == 0:
                raise ValueError("the training loader yielded no batch")
            self.epoch += 1
            self.batch_in_epoch = 0
