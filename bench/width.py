"""Width: the reference kNN graph (k=5) over 65,536 neurons from 256 samples.

Runs in a child process so its memory is its own: the child imports everything, makes the
activations and builds a tiny graph (libraries loaded, allocator warm), then resets its
peak resident set (``/proc/self/clear_refs``), builds the graph once and reports the time
(on the CPU the process's CPU time, with the wall clock beside it) and
``VmHWM - VmRSS(before)``: the peak memory above the process's baseline. On CUDA the
figure is the peak of ``torch.cuda.max_memory_allocated`` above the memory held before.
A full ``neurons x neurons`` float32 distance matrix would take 16 GiB; the library builds
the graph in row blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from bench._harness import Row, proc_status_kib, reset_peak_rss, synchronize

NAME = "width"
NEURONS, SAMPLES = 65_536, 256
TIME_LIMIT_S = 60.0
MEMORY_LIMIT_GIB = 2.0


def _child(neurons: int, samples: int, threads: int, device: str) -> dict:
    from gsr_pyg.learn import CoactivationGraph

    torch.set_num_threads(threads)
    dev = torch.device(device)
    builder = CoactivationGraph.reference()
    acts = torch.randn(samples, neurons, generator=torch.Generator().manual_seed(0)).to(dev)
    builder.from_activations(acts[:, :256])  # load kernels before measuring
    synchronize(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    exact = reset_peak_rss()
    rss_before = proc_status_kib("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    graph = builder.from_activations(acts)
    synchronize(dev)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - before
    else:
        hwm = proc_status_kib("VmHWM")
        peak = None if hwm is None or rss_before is None else 1024 * (hwm - rss_before)
    return {"wall_s": wall, "cpu_s": cpu, "peak_bytes": peak, "peak_reset": exact,
            "edges": int(graph.edge_index.shape[1] // 2), "neurons": neurons,
            "samples": samples, "device": device}


def run(device: torch.device, quick: bool = False) -> list[Row]:
    cmd = [sys.executable, "-m", "bench.width", "--child", "--threads",
           str(torch.get_num_threads()), "--device", str(device)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"width child failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # the CPU figure is CPU time (what an idle machine would take with these threads)
    seconds = result["cpu_s"] if device.type == "cpu" else result["wall_s"]
    peak_gib = (result["peak_bytes"] or 0) / 2**30
    memory = "GPU" if device.type == "cuda" else "RSS"
    note = f"{result['edges']} edges; peak {memory} above baseline {peak_gib:.2f} GiB"
    if result["peak_bytes"] is None:
        note = f"{result['edges']} edges; peak memory not measurable here"
    elif not result["peak_reset"]:
        note += " (peak not reset: an upper bound)"
    case = f"kNN k=5, {NEURONS} neurons x {SAMPLES} samples"
    time_ok = seconds < TIME_LIMIT_S
    memory_ok = result["peak_bytes"] is not None and peak_gib < MEMORY_LIMIT_GIB
    return [
        Row(NAME, case + ": time", seconds, " s", f"<= {TIME_LIMIT_S:g}", time_ok,
            candidate_ms=1e3 * seconds,
            note=f"{result['edges']} edges; wall clock {result['wall_s']:.0f} s", raw=result),
        Row(NAME, case + f": peak {memory}", peak_gib, " GiB", f"<= {MEMORY_LIMIT_GIB:g}",
            memory_ok, note=note, raw=result),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help="measure in this process")
    parser.add_argument("--neurons", type=int, default=NEURONS)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.neurons, args.samples, args.threads, args.device)))
    else:
        torch.set_num_threads(args.threads)
        from bench._harness import format_table

        print(format_table(run(torch.device(args.device))))


if __name__ == "__main__":
    main()
