"""Timing, memory and reporting helpers shared by the benchmarks.

Every figure is a ratio of two things measured in the same process, interleaved (A, B, then
B, A, ...), so that load from other jobs hits both alike; a figure is the median of the
per-round ratios. Absolute times (medians) are kept beside the ratios for reference only.
On the CPU the clock is the process's CPU time (see :func:`clock`).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels, so a timer around GPU work measures the work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device | str) -> Callable[[], float]:
    """The clock of a figure: on the CPU the process's CPU time, which does not count the
    time spent waiting for a core that other jobs hold (these machines are shared); on a GPU
    the wall clock around synchronised work."""
    return time.process_time if torch.device(device).type == "cpu" else time.perf_counter


def timed(fn: Callable[[], object], device: torch.device | str, repeat: int = 1) -> float:
    """Seconds for ``repeat`` calls of ``fn`` (device work included), on :func:`clock`."""
    now = clock(device)
    synchronize(device)
    start = now()
    for _ in range(repeat):
        fn()
    synchronize(device)
    return now() - start


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int,
                device: torch.device | str = "cpu", warmup: int = 1,
                repeat: int = 1) -> dict[str, list[float]]:
    """Time every candidate once per round, in alternating order (A, B, then B, A, ...).

    Returns the seconds per call (``repeat`` calls averaged) of each round, per candidate.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(timed(candidates[name], device, repeat) / repeat)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]``."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


def spread(numerator: list[float], denominator: list[float]) -> float:
    """Half the inter-quartile range of the per-round ratios: how noisy a figure is."""
    ratios = sorted(n / d for n, d in zip(numerator, denominator, strict=True))
    if len(ratios) < 4:
        return (ratios[-1] - ratios[0]) / 2
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return (q3 - q1) / 2


@dataclass
class Row:
    """One line of the table.

    ``figure`` is the headline number (a ratio unless ``unit`` says otherwise); ``target``
    reads like ``"<= 1.03"``; ``met`` is None when there is no target.
    """

    benchmark: str
    case: str
    figure: float
    unit: str
    target: str = ""
    met: bool | None = None
    spread: float | None = None
    baseline_ms: float | None = None
    candidate_ms: float | None = None
    note: str = ""
    raw: dict = field(default_factory=dict)


def check_target(value: float, target: str) -> bool | None:
    """``value`` against a target written ``"<= x"`` or ``">= x"`` (None without one)."""
    if not target:
        return None
    op, bound = target.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


def median_ms(seconds: list[float]) -> float:
    return 1e3 * statistics.median(seconds)


def format_table(rows: list[Row]) -> str:
    """The one printed table."""
    header = ("benchmark", "case", "figure", "target", "met", "+-", "baseline", "candidate",
              "note")
    lines = []
    for row in rows:
        figure = f"{row.figure:.3g}{row.unit}" if row.unit != "x" else f"{row.figure:.3f}x"
        if row.unit == "x" and row.figure >= 10:
            figure = f"{row.figure:.1f}x"
        met = "" if row.met is None else ("yes" if row.met else "NO")
        noise = "" if row.spread is None else f"{row.spread:.3f}"
        base = "" if row.baseline_ms is None else _ms(row.baseline_ms)
        cand = "" if row.candidate_ms is None else _ms(row.candidate_ms)
        lines.append((row.benchmark, row.case, figure, row.target, met, noise, base, cand,
                      row.note))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    out = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def _ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1e3:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.3g} ms"


def rows_to_json(rows: list[Row]) -> list[dict]:
    return [asdict(row) for row in rows]


def write_json_atomic(path: str | os.PathLike, payload: dict) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=False)
            handle.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


# ------------------------------------------------------------------------------- memory
def proc_status_kib(field_name: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False
