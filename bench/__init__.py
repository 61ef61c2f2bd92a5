"""Benchmarks of gsr-pyg (not tests): ``python -m bench`` or ``make bench``.

Each module measures one thing and returns table rows (:class:`bench._harness.Row`):

* :mod:`bench.overhead`: a training step with GSR over the same step without it;
* :mod:`bench.rebuild`: one graph refresh, the library against the reference's tools; the
  kNN builder against one Gram product; one refresh of the reference setting in ms;
* :mod:`bench.width`: the kNN graph of a 65,536-wide layer, time and peak memory;
* :mod:`bench.alternation`: a learned-graph run against the same run with learning off;
* :mod:`bench.spectral_filter`: a K=20 Chebyshev penalty a^T h(L) a at n = 4,096 beside the
  Laplacian penalty and a plain step;
* :mod:`bench.penalty_product`: the sparse product behind the penalty, candidates side by
  side (torch sparse CSR/CSC variants, torch-scatter's segment_csr, PyG's scatter).

Every figure is a ratio measured in one process, interleaved, median of repeated rounds
(see :mod:`bench._harness`); ``python -m bench`` prints one table and writes
``bench/results/<date>-<host>.json``.
"""

BENCHMARKS = ("overhead", "rebuild", "width", "alternation", "spectral_filter",
              "penalty_product")
