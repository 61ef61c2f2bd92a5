"""Segment sums along one axis: torch-scatter's ``segment_csr`` when it is installed, torch's
own ``segment_reduce`` otherwise.

The Laplacian product of :class:`gsr_pyg.spectral.LaplacianOperator` with ``method="segment"``
reads and writes a layer's ``[B, N]`` rows as they are: gather the neighbours' activations
``x[:, col]``, weight them, and sum each node's run of CSR-sorted entries. Both backends sum
a segment left to right, so they give the same numbers (the tests compare them). On the CPU
this is slower than the sparse CSR product (the gather writes ``B x nnz`` values), so
``method="auto"`` never picks it; see ``docs/performance.md`` for the measurements.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:  # optional: the `scatter` extra (pip install --no-build-isolation torch-scatter)
    import torch_scatter
except ImportError:  # pragma: no cover - depends on the environment
    torch_scatter = None

#: The backends :func:`segment_sum` can use here, the preferred one first.
BACKENDS = (("torch_scatter",) if torch_scatter is not None else ()) + ("torch",)


def segment_sum(src: Tensor, indptr: Tensor, dim: int, backend: str | None = None) -> Tensor:
    r"""Sums of consecutive segments of ``src`` along ``dim``:
    :math:`\text{out}_{\dots, i, \dots} = \sum_{e = p_i}^{p_{i+1} - 1} \text{src}_{\dots, e,
    \dots}` with :math:`p` = ``indptr`` (``[N + 1]``, int64, non-decreasing, from 0 to the
    length of ``src`` along ``dim``; not checked: an internal helper). An empty segment sums
    to 0.

    Args:
        src: the values, segments laid out one after the other along ``dim``.
        indptr: the segment boundaries, as a CSR matrix's ``crow_indices``.
        dim: 0 or the last dimension of ``src``.
        backend: ``"torch_scatter"`` or ``"torch"`` (default: the first of :data:`BACKENDS`).

    Example::

        >>> segment_sum(torch.tensor([[1., 2., 3.]]), torch.tensor([0, 2, 2, 3]), dim=1,
        ...             backend="torch")
        tensor([[3., 0., 3.]])
    """
    backend = BACKENDS[0] if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} here, got {backend!r}")
    dim = dim % src.dim()
    if backend == "torch_scatter":
        if dim == src.dim() - 1:
            # segment_csr reduces along the last axis of indptr: give it one per leading index
            indptr = indptr.expand(*src.shape[:-1], -1)
        return torch_scatter.segment_csr(src, indptr, reduce="sum")
    if dim == src.dim() - 1:
        offsets = indptr.expand(*src.shape[:-1], -1)
        return torch.segment_reduce(src, "sum", offsets=offsets, axis=dim, unsafe=True)
    return torch.segment_reduce(src, "sum", offsets=indptr, axis=0, unsafe=True)
