"""``python -m bench [--quick] [--only NAME ...] [--threads T] [--device DEV] [--out PATH]``.

Runs the benchmarks on the CPU (and on CUDA when a GPU is present, unless ``--device`` says
otherwise), prints one table and writes the figures, with every raw time, as JSON to
``bench/results/<YYYY-MM-DD>-<hostname>.json`` (``--quick`` and ``--only`` runs get a suffix,
so they never overwrite a full run). One thread by default: on a small shared machine a
second thread mostly measures the other jobs. See ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import socket
import sys
import time

import torch

from bench import BENCHMARKS
from bench._harness import format_table, load_average, rows_to_json, write_json_atomic

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds per figure (noisier; about a third of the time)")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these benchmarks ({', '.join(BENCHMARKS)})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (and BLAS) threads for every figure (default 1)")
    parser.add_argument("--device", action="append", default=None,
                        help="device to run on (repeatable; default: cpu, plus cuda if present)")
    parser.add_argument("--out", default=None, help="JSON path (default: bench/results/...)")
    return parser.parse_args(argv)


def _default_path(quick: bool, only: list[str] | None) -> str:
    stem = f"{datetime.date.today().isoformat()}-{socket.gethostname()}"
    if only:
        stem += "-" + "-".join(only)
    if quick:
        stem += "-quick"
    return os.path.join(RESULTS, stem + ".json")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    names = args.only or list(BENCHMARKS)
    load_before = load_average()
    started = time.perf_counter()
    rows = []
    for device_name in devices:
        device = torch.device(device_name)
        for name in names:
            module = importlib.import_module(f"bench.{name}")
            t0 = time.perf_counter()
            print(f"[bench] {name} on {device} ...", file=sys.stderr, flush=True)
            new_rows = module.run(device, quick=args.quick)
            for row in new_rows:
                row.case = f"{row.case} [{device.type}]"
            rows.extend(new_rows)
            print(f"[bench] {name} on {device}: {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - started
    load_after = load_average()
    print(format_table(rows))
    met = [row.met for row in rows if row.met is not None]
    print(f"\n{sum(met)}/{len(met)} targets met; {elapsed:.0f} s; {args.threads} thread(s); "
          f"load average {load_before and load_before[0]:.2f} -> "
          f"{load_after and load_after[0]:.2f} on {os.cpu_count()} CPUs")
    payload = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "threads": args.threads,
        "devices": {d: _device_name(torch.device(d)) for d in devices},
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "seconds": elapsed,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "platform": platform.platform()},
        "rows": rows_to_json(rows),
    }
    path = args.out or _default_path(args.quick, args.only)
    write_json_atomic(path, payload)
    print(f"wrote {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
