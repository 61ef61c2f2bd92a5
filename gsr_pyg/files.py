"""Atomic file writes: every file the library writes appears whole or not at all.

Public so that scripts and user code write their outputs the same way."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write", "json_default", "write_json", "write_text"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, flush it to disk, then
    rename it onto ``path``: readers (and a run killed mid-write) never see a partial file.
    The file is readable by all (``0644``), like any other output; the temporary one is
    hidden (``.<name>.*.tmp``) and removed when ``write`` fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes the file private
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as the UTF-8 file ``path`` (written as given: no newline translation),
    atomically; returns ``path``."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)

    atomic_write(path, write)
    return Path(path)


def json_default(value: object) -> object:
    """JSON for the values results and configs may hold besides JSON's own: tensors and
    numpy arrays or numbers as (nested) lists or numbers, paths as strings, anything else as
    its ``repr``. For ``json.dumps(..., default=json_default)``.

    Example:
        >>> json.dumps({"x": torch.tensor([1, 2]), "y": np.float32(0.5),
        ...             "path": Path("runs/a")}, default=json_default)
        '{"x": [1, 2], "y": 0.5, "path": "runs/a"}'
    """
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def write_json(path: str | os.PathLike, content: object, *, sort_keys: bool = False) -> Path:
    """``content`` as the JSON file ``path`` (indented by 2, a final newline; other values
    through :func:`json_default`), atomically; returns ``path``."""
    return write_text(path, json.dumps(content, indent=2, sort_keys=sort_keys,
                                       default=json_default) + "\n")
