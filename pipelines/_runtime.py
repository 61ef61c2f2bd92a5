"""What every pipeline run does besides its experiment: the processes and the device, the
torch threads, the output folder, timed training and the results files.

Under ``torchrun`` every process trains; only rank 0 (``is_main``) evaluates and writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

from gsr_pyg.files import atomic_write
from gsr_pyg.training import get_rank, is_distributed, setup_distributed


def resolve_device(name: str | None) -> torch.device:
    """``name`` as a device; None: the first CUDA device when there is one, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device must name a torch device (cpu, cuda, cuda:1, ...), "
                         f"got {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} was asked for but CUDA is not available here")
    return device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (when given), then restore."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def pipeline_processes(device_name: str | None) -> Iterator[tuple[bool, torch.device]]:
    """Yield ``(is_main, device)``. Launched by ``torchrun``, the process joins the process
    group (gloo on the CPU, nccl on CUDA, one GPU per process) and leaves it at the end; all
    processes train, only the main one (rank 0) evaluates and writes outputs."""
    joined_here = not is_distributed()
    rank, _, device = setup_distributed(resolve_device(device_name))
    try:
        yield rank == 0, device
    finally:
        if joined_here and is_distributed():
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def pipeline_run(threads: int | None, device: str | None,
                 out: str | os.PathLike) -> Iterator[tuple[bool, torch.device, Path]]:
    """The frame of every pipeline run: :func:`torch_threads`, :func:`pipeline_processes`
    and :func:`make_out_dir`; yields ``(is_main, device, out)``."""
    with torch_threads(threads), pipeline_processes(device) as (is_main, resolved):
        yield is_main, resolved, make_out_dir(out)


def make_out_dir(path: str | os.PathLike) -> Path:
    """Create the output directory ``--out`` (and its parents) as given; ValueError when it
    cannot be created or written."""
    out = Path(path)
    if get_rank() != 0:
        return out  # under torchrun only rank 0 writes
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {str(out)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {str(out)!r} is not writable")
    return out


def format_strength(value: float) -> str:
    """A weight or strength as it appears in file names: 0, 0.01, 1e-05, 100000."""
    return f"{value:g}"


def fit_timed(trainer, loader, run_dir: Path) -> float:
    """``trainer.fit(loader)``; returns the training seconds of the run over all sessions.

    The time is kept in ``run_dir/train_time.json``, so a run resumed after an interruption
    reports its whole training time and a finished run fitted again adds almost nothing.
    """
    record = Path(run_dir) / "train_time.json"
    previous = 0.0
    if record.exists():
        previous = float(json.loads(record.read_text(encoding="utf-8"))["seconds"])
    start = time.perf_counter()
    trainer.fit(loader)
    total = previous + time.perf_counter() - start
    if trainer.is_main:  # under torchrun only rank 0 writes
        write_text(record, json.dumps({"seconds": total}))
    return total


def write_file(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` then rename onto ``path`` (:func:`gsr_pyg.files.atomic_write`)."""
    atomic_write(path, write)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as the UTF-8 file ``path``, written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return write_file(path, write)


def save_state_dict(module: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save ``module.state_dict()`` (moved to the CPU) atomically."""
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    return write_file(path, lambda tmp: torch.save(state, tmp))


def write_results(rows: Sequence[Mapping], out: Path, stem: str = "results") -> Path:
    """``rows`` as ``<stem>.csv`` and ``<stem>.json`` in ``out``; returns the CSV path."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / f"{stem}.json", json.dumps(list(rows), indent=2) + "\n")
    return write_text(out / f"{stem}.csv", buffer.getvalue())
