"""The segment-sum product of the Laplacian penalty: torch's own segment_reduce always,
torch-scatter's segment_csr when it is installed (`make test-scatter`), and both against the
dense product, forward and backward."""

from __future__ import annotations

import pytest
import torch

from gsr_pyg import _scatter
from gsr_pyg._scatter import BACKENDS, segment_sum
from gsr_pyg.graphs import grid
from gsr_pyg.learn import knn_graph
from gsr_pyg.spectral import LaplacianOperator

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
needs_torch_scatter = pytest.mark.skipif(
    "torch_scatter" not in BACKENDS,
    reason="torch-scatter is not installed (make install-scatter)")


def reference_segments(src: torch.Tensor, indptr: torch.Tensor) -> torch.Tensor:
    return torch.stack([src[..., a:b].sum(-1) for a, b in zip(indptr[:-1], indptr[1:])], -1)


@pytest.mark.parametrize("backend", ["torch", pytest.param("torch_scatter",
                                                           marks=needs_torch_scatter)])
def test_segment_sum_equals_python_sums_on_both_axes(backend):
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(6, 40, generator=gen, dtype=torch.float64)
    indptr = torch.tensor([0, 3, 3, 10, 39, 40])  # an empty segment sums to 0
    expected = reference_segments(src, indptr)
    assert float(expected[:, 1].abs().max()) == 0.0
    torch.testing.assert_close(segment_sum(src, indptr, 1, backend), expected,
                               rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(segment_sum(src.t().contiguous(), indptr, 0, backend),
                               expected.t(), rtol=1e-15, atol=1e-15)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of"):
        segment_sum(torch.ones(1, 2), torch.tensor([0, 2]), 1, backend="cuda_magic")


def _operator(normalization):
    gen = torch.Generator().manual_seed(1)
    return LaplacianOperator(knn_graph(torch.randn(24, 150, generator=gen), k=6),
                             normalization)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("normalization", [None, "sym"])
@pytest.mark.parametrize("shape", [(40, 150), (5, 150, 3, 2)])
@pytest.mark.parametrize("backend", ["torch", pytest.param("torch_scatter",
                                                           marks=needs_torch_scatter)])
def test_segment_product_equals_dense_forward_and_backward(normalization, shape, backend,
                                                           device):
    op = _operator(normalization).to(device)
    x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    x = x.to(device).requires_grad_(True)
    dense = op(x, method="dense")
    (dense_grad,) = torch.autograd.grad(dense.sum(), x)
    op.sparse_product, op.segment_backend = "segment", backend
    values = op(x, method="sparse")
    (grad,) = torch.autograd.grad(values.sum(), x)
    assert values.shape == dense.shape == (shape[0],) + shape[2:]
    torch.testing.assert_close(values, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, dense_grad, rtol=1e-12, atol=1e-12)
    assert float(dense.abs().max()) > 1.0  # not trivially zero


@needs_torch_scatter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_scatter_and_native_segment_sums_agree_exactly(dtype):
    op = _operator(None)
    x = torch.randn(64, 150, generator=torch.Generator().manual_seed(3)).to(dtype)
    x.requires_grad_(True)
    op.sparse_product = "segment"
    results = {}
    for backend in ("torch", "torch_scatter"):
        op.segment_backend = backend
        values = op(x, method="sparse")
        results[backend] = (values, torch.autograd.grad(values.sum(), x)[0])
    assert torch.equal(results["torch"][0], results["torch_scatter"][0])
    assert torch.equal(results["torch"][1], results["torch_scatter"][1])


def test_torch_scatter_is_the_default_backend_when_installed():
    op = LaplacianOperator(grid(3, 3))
    installed = _scatter.torch_scatter is not None
    assert op.segment_backend == ("torch_scatter" if installed else "torch")
    assert op.sparse_product == "csr"  # the fastest on the CPU: never switched silently


def test_sparse_product_is_checked():
    op = LaplacianOperator(grid(3, 3))
    with pytest.raises(ValueError, match="sparse_product must be one of"):
        op.sparse_product = "coo"
