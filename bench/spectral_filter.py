"""Filtered penalty overhead: a training step with a K=20 Chebyshev penalty a^T h(L) a beside
the same step with the Laplacian penalty a^T L a and without any penalty.

A step is forward, loss, backward and an Adam step of an MLP 784-512-4096-10 at batch 256
(the wide layer of :mod:`bench.overhead`), whose 4,096-wide layer carries a kNN graph (k=8,
built from random activations). Three copies of the same model with the same weights take
the same batch, interleaved in one process: one plain, one with
:class:`~gsr_pyg.GraphSpectralRegularizer` (the Laplacian penalty, method ``"auto"``), one
with ``spectral_response=SpectralFilter("heat", t=1.0, method="chebyshev", order=20)``.
The Chebyshev penalty costs K = 20 sparse products forward and none more backward (the
backward reuses the forward product), the Laplacian penalty one.
"""

from __future__ import annotations

import copy

import torch

from bench._harness import Row, interleaved, median_ms, median_ratio, spread
from bench.overhead import training_step
from gsr_pyg import GraphSpectralRegularizer
from gsr_pyg.learn import knn_graph
from gsr_pyg.models import MLP
from gsr_pyg.spectral import SpectralFilter

NAME = "spectral_filter"
WIDTH = 4096
ORDER = 20


def _row(case: str, times: dict, candidate: str, baseline: str, note: str, raw: dict) -> Row:
    ratio = median_ratio(times[candidate], times[baseline])
    fastest = min(times[candidate]) / min(times[baseline])
    return Row(NAME, case, ratio, "x", "", None, spread(times[candidate], times[baseline]),
               median_ms(times[baseline]), median_ms(times[candidate]),
               f"{note}; fastest steps {fastest:.3f}x",
               raw | {"candidate": candidate, "baseline": baseline, "times_s": times,
                      "ratio_of_fastest": fastest})


def run(device: torch.device, quick: bool = False) -> list[Row]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    plain = MLP([784, 512, WIDTH, 10], names=["fc1", "hidden", "out"]).to(device).train()
    graph = knn_graph(torch.randn(64, WIDTH, generator=generator), k=8).to(device)
    x = torch.rand(256, 784, generator=generator).to(device)
    y = torch.randint(0, 10, (256,), generator=generator).to(device)
    laplacian_model, filtered_model = copy.deepcopy(plain), copy.deepcopy(plain)
    laplacian = GraphSpectralRegularizer(laplacian_model, {"hidden": graph}, weight=1e-2)
    response = SpectralFilter("heat", t=1.0, method="chebyshev", order=ORDER)
    filtered = GraphSpectralRegularizer(filtered_model, {"hidden": graph}, weight=1e-2,
                                        spectral_response=response)
    rounds = 5 if quick else 15
    times = interleaved({"plain": training_step(plain, x, y, None),
                         "laplacian": training_step(laplacian_model, x, y, laplacian),
                         "chebyshev": training_step(filtered_model, x, y, filtered)},
                        rounds, device)
    operator = filtered.operator("hidden")
    method = laplacian.operator("hidden").resolve_method(256, device)
    where = f"MLP 784-512-{WIDTH}-10 kNN k=8, batch 256"
    raw = {"model": "MLP", "batch": 256, "nodes": WIDTH,
           "edges": laplacian.operator("hidden").num_edges, "order": ORDER,
           "lambda_max": operator.lambda_max, "max_error": operator.max_error,
           "laplacian_method": method, "rounds": rounds}
    fit = (f"heat t=1, lambda_max bound {operator.lambda_max:.4g}, "
           f"max_error {operator.max_error:.2g}")
    return [
        _row(f"Laplacian penalty over plain step, {where}", times, "laplacian", "plain",
             f"method {method}", raw),
        _row(f"Chebyshev K={ORDER} penalty over plain step, {where}", times, "chebyshev",
             "plain", fit, raw),
        _row(f"Chebyshev K={ORDER} penalty over Laplacian penalty, {where}", times,
             "chebyshev", "laplacian", f"{ORDER} sparse products against 1", raw),
    ]
