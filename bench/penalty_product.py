"""The sparse product behind the penalty: candidates side by side.

The penalty of a ``[B, N]`` batch needs :math:`P = X\\mathbf{L}` (``L`` symmetric) as ``[B, N]``
rows: the form is ``(X * P).sum(1)`` and its gradient ``2 P`` (the backward reuses the
forward product). Every candidate below computes the value and the gradient of
``q(X).sum()`` for ``X`` of shape ``[256, N]``, a kNN graph (k=8), float32; the figure is its
time over the adopted one (``LaplacianOperator`` with ``method="sparse"``: the CSR product of
MKL on node-major blocks of samples; from 2,048 nodes, blocks of 16 transposed by products
with the identity), interleaved, median of the per-round ratios.

* ``segment_csr``: ``method="sparse"`` with ``sparse_product="segment"``: gather
  ``X[:, col]``, weight, torch-scatter's ``segment_csr`` over each node's CSR entries; reads
  and writes ``[B, N]`` rows (only when torch-scatter is installed);
* ``segment_reduce``: the same with torch's own ``torch.segment_reduce``;
* ``PyG scatter``: the same gather, then ``torch_geometric.utils.scatter`` over the COO rows;
* ``dense @ CSR``: ``torch.mm(X, L_csr)``, torch's dense-times-sparse;
* ``CSR, column-major``: ``torch.mm(L_csr, X.t(), out=P.t())``: the CSR product with
  ``X`` and ``P`` as column-major operands (no explicit transposes);
* ``CSC``: ``torch.mm(L_csc, X.t())`` (``L`` is symmetric, so its CSC arrays are its CSR
  ones transposed), transposed back;
* ``before``: the adopted product until blocks of wide layers were transposed by products
  with the identity: blocks of about 1 MiB transposed by copies.
"""

from __future__ import annotations

import warnings

import torch

from bench._harness import Row, interleaved, median_ms, median_ratio, spread
from gsr_pyg._scatter import BACKENDS
from gsr_pyg.learn import knn_graph
from gsr_pyg.spectral import LaplacianOperator, _sample_block

NAME = "penalty_product"
WIDTHS = (1024, 4096)
BATCH = 256


def _value_and_grad(x: torch.Tensor, product: torch.Tensor):
    """What the penalty's forward and backward make of ``P = X L``."""
    return (x * product).sum(dim=1), product * 2.0


def candidates(op: LaplacianOperator, x: torch.Tensor) -> dict:
    """name -> a function computing the form and its gradient for ``x`` ``[B, N]``."""
    from torch_geometric.utils import scatter

    csr = op._matrix("sparse", x.dtype)
    crow, col = csr.crow_indices().long(), csr.col_indices().long()
    values = csr.values()
    row = torch.repeat_interleave(torch.arange(op.num_nodes, device=x.device), crow.diff())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSC tensor support")
        csc = torch.sparse_csc_tensor(crow, col, values, csr.shape, check_invariants=False)
    out = torch.empty_like(x)

    def library(sparse_product: str, backend: str | None = None):
        def run():
            op.sparse_product = sparse_product
            if backend is not None:
                op.segment_backend = backend
            leaf = x.detach().requires_grad_(True)
            op(leaf, method="sparse").sum().backward()
            return leaf.grad
        return run

    def pyg_scatter():
        gathered = x.index_select(1, col).mul_(values)
        return _value_and_grad(x, scatter(gathered, row, dim=1, dim_size=op.num_nodes,
                                          reduce="sum"))

    def dense_times_csr():
        return _value_and_grad(x, torch.mm(x, csr))

    def csr_column_major():
        torch.mm(csr, x.t(), out=out.t())
        return _value_and_grad(x, out)

    def csc_product():
        return _value_and_grad(x, torch.mm(csc, x.t()).t())

    def copies_in_blocks_before():
        # the adopted product until the identity transposes: blocks of about 1 MiB (64
        # samples at N = 4,096) transposed by copies, torch.mm(L, block, out=...), the
        # gradient written transposed
        grad = torch.empty_like(x)
        values = x.new_empty(x.shape[0])
        block = _sample_block(x.shape[0], x.shape[1], x)
        for start in range(0, x.shape[0], block):
            columns = x[start:start + block].t().contiguous()
            product = torch.mm(csr, columns, out=x.new_empty(columns.shape))
            values[start:start + block] = (columns * product).sum(dim=0)
            torch.mul(product, 2.0, out=grad[start:start + block].t())
        return values, grad

    found = {"CSR node-major blocks (adopted)": library("csr")}
    if "torch_scatter" in BACKENDS:
        found["segment_csr (torch-scatter)"] = library("segment", "torch_scatter")
    found["segment_reduce (torch)"] = library("segment", "torch")
    found["PyG utils.scatter"] = pyg_scatter
    found["dense @ CSR (torch.mm(X, L))"] = dense_times_csr
    found["CSR, column-major operands"] = csr_column_major
    found["CSC (torch.mm(L_csc, X.T))"] = csc_product
    found["CSR, blocks transposed by copies (before)"] = copies_in_blocks_before
    return found


def run(device: torch.device, quick: bool = False) -> list[Row]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for width in WIDTHS:
        graph = knn_graph(torch.randn(64, width, generator=generator), k=8).to(device)
        op = LaplacianOperator(graph).to(device)
        x = torch.randn(BATCH, width, generator=generator).to(device)
        found = candidates(op, x)
        reference = found["CSR node-major blocks (adopted)"]()
        for name, fn in list(found.items()):
            try:
                result = fn()
            except (RuntimeError, NotImplementedError) as err:  # e.g. CSC on a device
                found.pop(name)
                rows.append(Row(NAME, f"{name}, N = {width}", float("nan"), "x",
                                note=f"not available here: {type(err).__name__}"))
                continue
            grad = result if isinstance(result, torch.Tensor) else result[1]
            if not torch.allclose(grad, reference, rtol=1e-4, atol=1e-3):
                raise RuntimeError(f"{name} disagrees with the adopted product at N={width}")
        rounds = 3 if quick else 9
        times = interleaved(found, rounds, device, repeat=2)
        base = times["CSR node-major blocks (adopted)"]
        for name, seconds in times.items():
            rows.append(Row(NAME, f"{name}, N = {width}, batch {BATCH}",
                            median_ratio(seconds, base), "x", spread=spread(seconds, base),
                            baseline_ms=median_ms(base), candidate_ms=median_ms(seconds),
                            note="time / adopted; forward + backward of the form",
                            raw={"nodes": width, "batch": BATCH, "edges": op.num_edges,
                                 "rounds": rounds, "times_s": seconds}))
    return rows
