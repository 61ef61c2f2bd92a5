"""What every pipeline run does besides its experiment: the settings every pipeline has, the
processes and the device, the torch threads, the output folder, timed training and the
results files.

Under ``torchrun`` every process trains; only rank 0 (``is_main``) evaluates and writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from gsr_pyg.files import atomic_write, write_json, write_text
from gsr_pyg.training import get_rank, get_world_size, is_distributed, setup_distributed

from ._cli import check_settings, option


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


@dataclass(frozen=True)
class RunSettings:
    """What the settings of every pipeline share: ``--quiet`` (last in every --help) and the
    checks of ``__post_init__``: every option as its option checks it, then the device.
    Each pipeline declares ``device`` with :func:`device_option`, where its --help lists it;
    a subclass with more checks calls ``super().__post_init__()`` first."""

    quiet: bool = option(False, "no progress bars")

    def __post_init__(self) -> None:
        check_settings(self)
        resolve_device(self.device)  # refuses a device that is not there


def device_option() -> str | None:
    """The ``device`` field of a pipeline's settings (None: CUDA when available)."""
    return option(None, "torch device, e.g. cpu or cuda:0 (default: cuda when available)")


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


def training_steps(num_samples: int, batch_size: int, epochs: int) -> tuple[int, int]:
    """``(steps per epoch, steps in all)`` of ``epochs`` over ``num_samples`` when every
    process (under torchrun) takes ``batch_size`` samples per step."""
    steps_per_epoch = math.ceil(num_samples / (batch_size * get_world_size()))
    return steps_per_epoch, epochs * steps_per_epoch


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


def save_state_dict(module: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save ``module.state_dict()`` (moved to the CPU) atomically."""
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return Path(path)


def write_results(rows: Sequence[Mapping], out: Path, content: object = None) -> Path:
    """``rows`` as ``results.csv`` and ``content`` (default: the rows) as ``results.json`` in
    ``out``; returns the CSV path."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_json(out / "results.json", list(rows) if content is None else content)
    return write_text(out / "results.csv", buffer.getvalue())


def choose_on_validation(rows: list[dict], group: str, baseline: str,
                admissible: Callable[[dict, dict], bool],
                score: str = "validation_morans_i") -> dict[str, dict | None]:
    """The choice every sweep makes on validation data: for each value of ``rows[i][group]``
    other than ``baseline``, the row with the highest ``score`` among those that
    ``admissible(row, baseline_row)`` accepts (marked ``chosen``; None when none is).
    Nothing is chosen when the baseline was not run."""
    reference = [row for row in rows if row[group] == baseline]
    if not reference:
        return {}
    chosen: dict[str, dict | None] = {}
    for value in dict.fromkeys(row[group] for row in rows if row[group] != baseline):
        candidates = [row for row in rows
                      if row[group] == value and admissible(row, reference[0])]
        best = max(candidates, key=lambda row: row[score], default=None)
        if best is not None:
            best["chosen"] = True
        chosen[value] = best
    return chosen
