"""Launching the test subprocesses: ``torchrun`` on a free local port, the environment every
launched process gets, and a run that must succeed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    """The command ``torchrun --nproc_per_node=<nproc> <args>`` (a script and its arguments,
    or ``-m module ...``) on 127.0.0.1 and a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]


def env() -> dict[str, str]:
    """The environment of a launched process: the repository importable from any working
    directory, one OpenMP thread per process."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(command: list[str], cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` with :func:`env` (in ``cwd``); it must exit with status 0. Returns the
    finished process, stdout and stderr as text."""
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=600,
                          cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done
