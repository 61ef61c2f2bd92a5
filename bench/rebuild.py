"""Graph rebuild: the library's builder against the reference path.

One refresh of a learned graph, from a batch of activations ``[samples, neurons]`` to an
installed Laplacian and the connectivity check of the stop rule.

* Reference path (the reference's tools, on the CPU): scikit-learn ``kneighbors_graph``
  (connectivity, k=5) over the neurons, symmetrised ``(A + A^T) / 2``, the dense normalized
  Laplacian ``I - D^-1/2 A D^-1/2``, and a dense eigendecomposition
  (``numpy.linalg.eigvalsh``) whose near-zero eigenvalues count the connected components.
* Library path (what :class:`~gsr_pyg.refresh.GraphRefresh` does at a refresh):
  ``CoactivationGraph.reference().from_activations(acts)``,
  :func:`~gsr_pyg.spectral.connected_components` and a
  :class:`~gsr_pyg.spectral.LaplacianOperator` with ``normalization="sym"``, evaluated once
  on two samples (which builds the matrix it caches for the training steps).

Both paths must agree on the number of components and the number of edges; the row says so.

Two more figures, against the physical limits rather than the reference:

* the kNN builder (``CoactivationGraph.reference().from_activations``) over one full Gram
  product ``x @ x.T`` of the same neuron features, interleaved in the same process: the
  product is the bulk of an exact kNN, and the builder computes only the upper half of it;
* one refresh of the reference setting (100 neurons x 32 samples) as the trainer runs it:
  :meth:`GraphRefresh.refresh` (build, connected components, stop rule, installing the new
  Laplacian) plus the first penalty on the new graph, in ms of CPU time (median of rounds).
"""

from __future__ import annotations

import numpy as np
import torch

from bench._harness import Row, check_target, interleaved, median_ms, median_ratio, spread
from gsr_pyg import GraphSpectralRegularizer
from gsr_pyg.learn import CoactivationGraph
from gsr_pyg.refresh import GraphRefresh
from gsr_pyg.spectral import LaplacianOperator, connected_components

NAME = "rebuild"
# (neurons, samples): the reference setting, then wider layers and larger batches
SIZES = ((100, 32), (1024, 1024), (4096, 1024))
TARGETS = {(100, 32): ">= 10", (4096, 1024): ">= 50"}
# the builder over one Gram product x @ x.T, (neurons, samples) -> target
GRAM_SIZES = {(1024, 1024): "", (4096, 1024): "<= 1.3"}
REFRESH_TARGET_MS = "<= 1"
# eigenvalues below this count as zero (the normalized Laplacian's spectrum lies in [0, 2])
ZERO_EIGENVALUE = 1e-6


def reference_rebuild(acts: np.ndarray, k: int = 5) -> tuple[int, int]:
    """The reference path; returns ``(components, undirected edges)``."""
    from sklearn.neighbors import kneighbors_graph

    adjacency = kneighbors_graph(acts.T, n_neighbors=k, mode="connectivity",
                                 include_self=False)
    adjacency = (0.5 * (adjacency + adjacency.T)).toarray()
    degree = adjacency.sum(axis=1)
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    laplacian = np.eye(adjacency.shape[0]) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    eigenvalues = np.linalg.eigvalsh(laplacian)
    components = int((eigenvalues < ZERO_EIGENVALUE).sum())
    edges = int(np.count_nonzero(np.triu(adjacency, 1)))
    return components, edges


def library_rebuild(acts: torch.Tensor) -> tuple[int, int]:
    """The library path; returns ``(components, undirected edges)``."""
    graph = CoactivationGraph.reference().from_activations(acts)
    components, _ = connected_components(graph)
    operator = LaplacianOperator(graph, normalization="sym")
    operator(acts[:2])  # the first evaluation builds the matrix the training steps use
    return components, operator.num_edges


def gram_rows(device: torch.device, quick: bool) -> list[Row]:
    """The builder against one full Gram product of the same features."""
    rows = []
    generator = torch.Generator().manual_seed(1)
    builder = CoactivationGraph.reference()
    for (neurons, samples), target in GRAM_SIZES.items():
        acts = torch.randn(samples, neurons, generator=generator).to(device)
        features = acts.t().contiguous()
        rounds = (3 if quick else 9) if neurons >= 4096 else (5 if quick else 15)
        times = interleaved({"gram": lambda f=features: f @ f.T,
                             "builder": lambda a=acts: builder.from_activations(a)},
                            rounds, device)
        ratio = median_ratio(times["builder"], times["gram"])
        rows.append(Row(NAME, f"kNN builder / one Gram product x @ x.T, {neurons} x {samples}",
                        ratio, "x", target, check_target(ratio, target),
                        spread(times["builder"], times["gram"]), median_ms(times["gram"]),
                        median_ms(times["builder"]),
                        "builder computes the upper-triangular tiles only",
                        {"neurons": neurons, "samples": samples, "rounds": rounds,
                         "times_s": times}))
    return rows


def refresh_row(device: torch.device, quick: bool) -> Row:
    """One refresh of the reference setting as the trainer runs it, plus the first penalty."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 100), torch.nn.Tanh()).to(device)
    reg = GraphSpectralRegularizer(model, {"1": 100}, weight=1e-2, normalization="sym")
    refresh = GraphRefresh(reg, {"1": CoactivationGraph.reference()}, stop="never")
    x = torch.randn(32, 20, generator=torch.Generator().manual_seed(2)).to(device)
    with torch.no_grad():
        model(x)

        def once():
            refresh.refresh()
            reg.penalty()

        rounds, repeat = (5, 20) if quick else (15, 50)
        times = interleaved({"refresh": once}, rounds, device, warmup=repeat, repeat=repeat)
    ms = median_ms(times["refresh"])
    return Row(NAME, "refresh at 100 x 32 (GraphRefresh.refresh + first penalty)", ms,
               " ms", REFRESH_TARGET_MS, check_target(ms, REFRESH_TARGET_MS),
               candidate_ms=ms, note="CPU time per refresh, median of rounds",
               raw={"rounds": rounds, "repeat": repeat, "times_s": times})


def run(device: torch.device, quick: bool = False) -> list[Row]:
    from threadpoolctl import threadpool_limits

    rows = []
    generator = torch.Generator().manual_seed(0)
    for neurons, samples in SIZES:
        acts_cpu = torch.randn(samples, neurons, generator=generator)
        acts_np = acts_cpu.numpy().copy()
        acts = acts_cpu.to(device)
        # numpy's BLAS gets the same number of threads as torch
        with threadpool_limits(limits=torch.get_num_threads()):
            ref_result = reference_rebuild(acts_np)
            lib_result = library_rebuild(acts)
            if neurons >= 4096:
                rounds, repeat = (1, 1) if quick else (3, 1)
            elif neurons >= 1024:
                rounds, repeat = (3, 1) if quick else (7, 2)
            else:
                rounds, repeat = (5, 10) if quick else (15, 20)
            times = interleaved({"reference": lambda a=acts_np: reference_rebuild(a),
                                 "library": lambda a=acts: library_rebuild(a)},
                                rounds, device, warmup=0 if neurons >= 4096 else 1,
                                repeat=repeat)
        speedup = median_ratio(times["reference"], times["library"])
        target = TARGETS.get((neurons, samples), "")
        agree = ref_result == lib_result
        note = (f"{lib_result[1]} edges, {lib_result[0]} component(s), "
                + ("paths agree" if agree else f"MISMATCH: reference {ref_result}"))
        rows.append(Row(NAME, f"kNN k=5, {neurons} neurons x {samples} samples", speedup, "x",
                        target, check_target(speedup, target) if agree else False,
                        spread(times["reference"], times["library"]),
                        median_ms(times["reference"]), median_ms(times["library"]), note,
                        {"neurons": neurons, "samples": samples, "rounds": rounds,
                         "reference_result": ref_result, "library_result": lib_result,
                         "times_s": times}))
    with threadpool_limits(limits=torch.get_num_threads()):
        rows += gram_rows(device, quick) + [refresh_row(device, quick)]
    return rows
