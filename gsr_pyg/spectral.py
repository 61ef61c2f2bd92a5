r"""Graph Laplacians of neuron graphs and the Laplacian quadratic form.

A layer's neurons are the nodes of a graph given as a :class:`torch_geometric.data.Data`
in the data model of :mod:`gsr_pyg.graphs`, checked by
:func:`gsr_pyg.graphs.check_graph` (``num_nodes``, ``edge_index`` with both directions of
every undirected edge and no self-loops, ``edge_weight`` > 0, symmetric). For activations
:math:`\mathbf{a} \in \mathbb{R}^N` the penalty of graph spectral regularization is the
Laplacian quadratic form

.. math::
    \mathbf{a}^\top \mathbf{L} \mathbf{a} = \sum_{\{i, j\} \in E} w_{ij} (a_i - a_j)^2,
    \qquad \mathbf{L} = \mathbf{D} - \mathbf{W},

or, with ``normalization="sym"``, :math:`\mathbf{L} = \mathbf{I} - \mathbf{D}^{-1/2}
\mathbf{W} \mathbf{D}^{-1/2}` and :math:`a_i / \sqrt{d_i}` in place of :math:`a_i`.
Isolated nodes (degree 0) have an all-zero row and column in both Laplacians (the
convention of :func:`networkx.normalized_laplacian_matrix`). The random-walk Laplacian
:math:`\mathbf{I} - \mathbf{D}^{-1}\mathbf{W}` is not symmetric and its quadratic form is
indefinite, so it is refused.

:class:`LaplacianOperator` precomputes what a graph needs once and evaluates the form for
a batch every training step; :func:`quadratic_form` is its one-shot functional form.

The spectral family generalises the penalty to :math:`\mathbf{a}^\top h(\mathbf{L})
\mathbf{a} = \sum_k h(\lambda_k)\,|\hat a_k|^2` for a response :math:`h \ge 0` on the
spectrum (:class:`SpectralFilter`: presets ``"laplacian"``, ``"power"``, ``"heat"``,
``"high_pass"`` or any callable), computed in the eigenbasis for small graphs and as a
Chebyshev polynomial of the scaled Laplacian for large ones (:class:`FilteredOperator`,
:func:`filtered_quadratic_form`, :func:`chebyshev_fit`).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch_geometric.data import Data

from gsr_pyg._scatter import BACKENDS as SEGMENT_BACKENDS
from gsr_pyg._scatter import segment_sum
from gsr_pyg._validation import (
    check_choice,
    check_int,
    check_positive,
    check_tensor,
    closest_names,
    describe,
)
from gsr_pyg.graphs import check_graph, edge_weights

__all__ = [
    "ChebyshevFit",
    "FilteredOperator",
    "LaplacianOperator",
    "SpectralFilter",
    "as_spectral_filter",
    "chebyshev_fit",
    "chebyshev_moments",
    "check_normalization",
    "connected_components",
    "eigenbasis",
    "filtered_quadratic_form",
    "graph_tensors",
    "lambda_max_bound",
    "laplacian",
    "quadratic_form",
    "work_dtype",
]

NORMALIZATIONS = (None, "sym")
METHODS = ("auto", "dense", "edge", "sparse")
#: How ``"sparse"`` multiplies: MKL/cuSPARSE CSR products on node-major sample blocks, or
#: segment sums that read and write ``[B, N]`` rows (torch-scatter when installed).
SPARSE_PRODUCTS = ("csr", "segment")

# --------------------------------------------------------------------------------------
# validation of a graph (once, at the public boundary)
# --------------------------------------------------------------------------------------

def check_normalization(norm, name: str = "normalization") -> str | None:
    r"""Check a Laplacian normalization; return it.

    ``None`` (:math:`\mathbf{L} = \mathbf{D} - \mathbf{W}`) and ``"sym"``
    (:math:`\mathbf{I} - \mathbf{D}^{-1/2}\mathbf{W}\mathbf{D}^{-1/2}`) are accepted.
    ``"rw"`` is refused: the random-walk Laplacian :math:`\mathbf{I} - \mathbf{D}^{-1}
    \mathbf{W}` is not symmetric and its quadratic form is indefinite, so it cannot be a
    penalty.

    Args:
        norm: the value to check.
        name (str): how error messages call it, e.g. ``"normalization for layer 'fc1'"``.

    Raises:
        TypeError: ``norm`` is neither ``None`` nor a string.
        ValueError: ``norm`` is ``"rw"`` or another string.

    Example:
        >>> check_normalization("sym", "normalization")
        'sym'
    """
    if norm is not None and not isinstance(norm, str):
        raise TypeError(f"{name} must be None or 'sym', got {describe(norm)}")
    if norm == "rw":
        raise ValueError(
            f"{name} is 'rw': the random-walk Laplacian is not symmetric (L = I - D^-1 W) "
            "and its quadratic form is indefinite, so it cannot be a penalty; use None "
            "(L = D - W) or 'sym' (L = I - D^-1/2 W D^-1/2)"
        )
    check_choice(norm, name, NORMALIZATIONS)
    return norm


def work_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype graph structures are derived in on ``device``: ``float64`` (exact degrees,
    cast per use), ``float32`` on MPS, which has no ``float64``.

    Example:
        >>> work_dtype("cpu")
        torch.float64
    """
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def graph_tensors(data: Data, name: str = "data") -> tuple[int, Tensor, Tensor]:
    """Check a neuron graph (:func:`gsr_pyg.graphs.check_graph`, and at least one node);
    return ``(num_nodes, edge_index, edge_weight)`` with the weights in :func:`work_dtype`
    (ones when the graph has none): what every computation on a graph starts from.

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=2)
        >>> graph_tensors(data)
        (2, tensor([[0, 1],
                [1, 0]]), tensor([1., 1.], dtype=torch.float64))
    """
    check_graph(data, name=name)
    num_nodes = check_int(int(data.num_nodes), f"{name}.num_nodes", minimum=1)
    edge_index = data.edge_index
    return num_nodes, edge_index, edge_weights(data, work_dtype(edge_index.device))


def _laplacian_entries(num_nodes: int, edge_index: Tensor, edge_weight: Tensor,
                       normalization: str | None) -> tuple[Tensor, Tensor]:
    """COO entries of L (a checked graph), not coalesced: the edges,
    then the diagonal. Isolated nodes get no entry (an all-zero row, also for ``"sym"``,
    where :func:`torch_geometric.utils.get_laplacian` would put a 1)."""
    row, col = edge_index[0], edge_index[1]
    degree = edge_weight.new_zeros(num_nodes).index_add_(0, row, edge_weight)
    if normalization == "sym":
        inv_sqrt = degree.pow(-0.5).masked_fill_(degree == 0, 0.0)
        off_diagonal = -(inv_sqrt[row] * edge_weight * inv_sqrt[col])
        diagonal = (degree > 0).to(edge_weight.dtype)
    else:
        off_diagonal = -edge_weight
        diagonal = degree
    nodes = torch.arange(num_nodes, device=row.device)[degree > 0]
    index = torch.cat([edge_index, nodes.expand(2, -1)], dim=1)
    return index, torch.cat([off_diagonal, diagonal[nodes]])


# --------------------------------------------------------------------------------------
# Laplacian matrices
# --------------------------------------------------------------------------------------

def laplacian(data, normalization: str | None = None, dense: bool = False) -> Tensor:
    r"""The graph Laplacian of a neuron graph.

    .. math::
        \mathbf{L} = \mathbf{D} - \mathbf{W} \quad (\text{normalization=None}), \qquad
        \mathbf{L} = \mathbf{I} - \mathbf{D}^{-1/2}\mathbf{W}\mathbf{D}^{-1/2}
        \quad (\text{"sym"}),

    with :math:`\mathbf{D} = \operatorname{diag}(\mathbf{W}\mathbf{1})`. For ``"sym"`` the
    row and column of an isolated node are zero (as :func:`networkx.normalized_laplacian_matrix`;
    :func:`torch_geometric.utils.get_laplacian` puts a 1 on that diagonal). The graph
    must follow the data model (:func:`gsr_pyg.graphs.check_graph`: both directions of every
    edge with equal weights, no self-loops, no repeated entries). ``"rw"`` is refused: the
    random-walk Laplacian is not symmetric and its quadratic form is indefinite, so it cannot
    serve as a penalty.

    Args:
        data (Data): the neuron graph (``num_nodes``, ``edge_index``, optional
            ``edge_weight``; unweighted edges count 1).
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        dense (bool): return a dense ``[N, N]`` tensor instead of a coalesced sparse COO
            tensor. (default: ``False``)

    Returns:
        ``[N, N]`` tensor on the device of ``data.edge_index``, dtype of
        ``data.edge_weight`` (float32 when the graph has no weights).

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> laplacian(data, dense=True)
        tensor([[ 1., -1.,  0.],
                [-1.,  2., -1.],
                [ 0., -1.,  1.]])
    """
    check_normalization(normalization)
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    given = getattr(data, "edge_weight", None)
    out_dtype = given.dtype if given is not None else torch.float32
    index, value = _laplacian_entries(num_nodes, edge_index, edge_weight, normalization)
    matrix = torch.sparse_coo_tensor(
        index, value.to(out_dtype), (num_nodes, num_nodes), check_invariants=False
    ).coalesce()
    return matrix.to_dense() if dense else matrix


# --------------------------------------------------------------------------------------
# the quadratic form
# --------------------------------------------------------------------------------------

# Sparse products on the CPU go through the samples in node-major blocks of about this many
# bytes: the rows the sparse matrix gathers in random order then stay in the core's cache.
_SPARSE_BLOCK_BYTES = 2**20
_SPARSE_MIN_BLOCK = 32


def _sample_block(num_samples: int, num_nodes: int, x: Tensor) -> int:
    if x.device.type != "cpu":
        return num_samples
    block = max(_SPARSE_MIN_BLOCK, _SPARSE_BLOCK_BYTES // (num_nodes * x.element_size()))
    return min(block, num_samples)


# A [B, N] batch of a layer this wide on the CPU goes through the sparse product in
# node-major blocks of _CPU_BLOCK samples, transposed by products with a 16 x 16 identity (and
# a diagonal in the backward pass): BLAS packs a transposed operand about twice as fast as
# PyTorch's transposing copy, and for finite numbers x * 1 + 0 * y is exactly x. Narrower
# layers keep copies in blocks of _SPARSE_BLOCK_BYTES: their transposes cost less than the
# extra operations of small blocks (measured by bench/penalty_product.py and the overhead
# rows of bench/overhead.py).
_IDENTITY_MIN_NODES = 2048
_CPU_BLOCK = 16


def _block_starts(num_samples: int, block: int):
    return ((start, min(start + block, num_samples)) for start in range(0, num_samples, block))


def _block_form(rows: Tensor, matrix: Tensor, product: Tensor, values: Tensor,
                identity: Tensor | None) -> None:
    """Node-major ``product = L rows^T`` and ``values = diag(rows L rows^T)`` of one block of
    ``[b, N]`` rows, with the transposes done by products with ``identity`` (at least
    ``b x b``; the CPU) or, when it is None, by copies."""
    if identity is not None:
        width = rows.shape[0]
        columns = torch.mm(rows.t(), identity[:width, :width])
        torch.addmm(product, matrix, columns, beta=0.0, out=product)  # beta=0: no zeroing
        values.copy_(torch.mm(columns.t(), product).diagonal())  # b dot products
        return
    columns = rows.t().contiguous()
    if rows.device.type == "cpu":
        torch.addmm(product, matrix, columns, beta=0.0, out=product)
    else:  # sparse `out=` support varies by backend
        product.copy_(matrix @ columns)
    torch.sum(columns * product, dim=0, out=values)


def _blocks(x: Tensor, matrix: Tensor, products: Tensor, values: Tensor, block: int,
            identity: Tensor | None) -> None:
    """:func:`_block_form` of every block of ``block`` rows of ``x`` ``[M, N]``: ``products``
    (``M * N``, node-major block after block) and ``values`` (``M``)."""
    num_samples, num_nodes = x.shape
    for start, stop in _block_starts(num_samples, block):
        product = products[start * num_nodes:stop * num_nodes].view(num_nodes, stop - start)
        _block_form(x[start:stop], matrix, product, values[start:stop], identity)


def _cpu_blocks(x: Tensor, matrix: Tensor, products: Tensor, values: Tensor) -> bool:
    """:func:`_blocks` on the CPU, of :data:`_CPU_BLOCK` rows transposed by products with the
    identity; returns whether they were (False: the batch held an Inf or NaN, and was done
    with copies)."""
    _blocks(x, matrix, products, values, _CPU_BLOCK, torch.eye(_CPU_BLOCK, dtype=x.dtype))
    # 0 * inf is NaN: an Inf or NaN activation would spread over its block through the
    # identity, so such a batch is done again with copies (every value stays its own). The
    # values are in the host's memory: reading them waits for nothing.
    if bool(torch.isfinite(values).all()):
        return True
    _blocks(x, matrix, products, values, _CPU_BLOCK, None)
    return False


class _QuadraticFormWithProduct(torch.autograd.Function):
    r"""Samples of ``x`` -> :math:`q_m = \mathbf{x}_m^\top \mathbf{L} \mathbf{x}_m` for a
    symmetric ``L`` (dense, or sparse CSR).

    ``x`` is ``[N, M]`` (``node_dim=0``: one column per sample) or ``[M, N]``
    (``node_dim=1``: one row per sample, a layer's own ``[B, N]`` output, used as is).

    The backward pass reuses the product :math:`\mathbf{L}\mathbf{x}_m` of the forward pass:
    :math:`\partial q_m / \partial \mathbf{x}_m = 2 \mathbf{L} \mathbf{x}_m`, so a training
    step costs one product. A sparse product of ``[M, N]`` rows runs on node-major blocks of
    samples (see :data:`_IDENTITY_MIN_NODES`; one block off the CPU); the products stay
    node-major until the backward pass writes the gradient, transposed, block by block.
    """

    @staticmethod
    def forward(ctx, x: Tensor, matrix: Tensor | tuple, node_dim: int) -> Tensor:
        ctx.node_dim = node_dim
        ctx.blocked = not isinstance(matrix, tuple) and (
            node_dim == 1 and matrix.layout == torch.sparse_csr)
        if not ctx.blocked:
            # (L x_m)^T = x_m^T L for symmetric L: a [M, N] batch needs no transpose
            if isinstance(matrix, tuple):
                product = _segment_product(matrix, x, node_dim)
            else:
                product = matrix @ x if node_dim == 0 else x @ matrix
            ctx.save_for_backward(product)
            return (x * product).sum(dim=node_dim)
        num_samples, num_nodes = x.shape
        products = x.new_empty(num_samples * num_nodes)  # node-major block after block
        values = x.new_empty(num_samples)
        ctx.by_products = x.device.type == "cpu" and num_nodes >= _IDENTITY_MIN_NODES
        if ctx.by_products:
            ctx.block = _CPU_BLOCK
            ctx.by_products = _cpu_blocks(x, matrix, products, values)
        else:  # blocks transposed by copies (one block off the CPU)
            ctx.block = _sample_block(num_samples, num_nodes, x)
            _blocks(x, matrix, products, values, ctx.block, None)
        ctx.save_for_backward(products)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (product,) = ctx.saved_tensors
        scale = 2.0 * grad_output
        if not ctx.blocked:
            return product * scale.unsqueeze(ctx.node_dim), None, None
        num_samples = scale.shape[0]
        num_nodes = product.numel() // num_samples
        grad = product.new_empty(num_samples, num_nodes)
        for start, stop in _block_starts(num_samples, ctx.block):
            block = product[start * num_nodes:stop * num_nodes].view(num_nodes, stop - start)
            if ctx.by_products:  # diag(scale) @ block^T: the scaled rows, transposed by BLAS
                torch.mm(torch.diag(scale[start:stop]), block.t(), out=grad[start:stop])
            else:  # the multiply writes straight into the transposed rows of the gradient
                torch.mul(block, scale[start:stop], out=grad[start:stop].t())
        return grad, None, None


def _segment_product(parts: tuple[Tensor, Tensor, Tensor, str], x: Tensor,
                     node_dim: int) -> Tensor:
    r""":math:`\mathbf{L}` times the samples of ``x`` in their own layout, from the CSR arrays
    ``(crow, col, values, backend)``: gather every entry's neighbour, weight it, and sum each
    node's run of entries (:func:`gsr_pyg._scatter.segment_sum`)."""
    crow, col, values, backend = parts
    if node_dim == 1:  # [M, N] rows in, [M, N] rows out
        return segment_sum(x.index_select(1, col).mul_(values), crow, 1, backend)
    return segment_sum(x.index_select(0, col).mul_(values[:, None]), crow, 0, backend)


def _check_activations(x, num_nodes: int, name: str = "x") -> Tensor:
    check_tensor(x, name, min_ndim=2, floating=True)
    if x.size(1) != num_nodes:
        raise ValueError(
            f"{name} has {x.size(1)} features in dimension 1 but the graph has "
            f"{num_nodes} nodes"
        )
    return x


def _check_same_device(x: Tensor, operator) -> None:
    if x.device != operator.device:
        raise ValueError(
            f"x is on {x.device} but the {type(operator).__name__} is on {operator.device}; "
            f"move it once with op.to({str(x.device)!r})"
        )


def _batch_layout(x: Tensor, num_nodes: int) -> tuple[Tensor, int, tuple[int, ...] | None]:
    """``x`` ``[B, N]`` or ``[B, N, *]`` (float32/float64; half precision goes to float32) as
    the samples a product reads: ``(samples, node_dim, out_shape)``, where ``out_shape`` is
    the shape of the per-sample result (None: ``[B]`` as it comes)."""
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.dim() == 2:
        # [B, N] is used as is: one row per sample (no transposed copy of the layer)
        return x, 1, None
    # node-major [N, M]: every column is one sample or one spatial position
    out_shape = (x.size(0),) + tuple(x.shape[2:])
    return x.transpose(0, 1).reshape(num_nodes, -1), 0, out_shape


def _without_autocast(device: torch.device):
    """Under autocast the products would run in half precision: keep float32/float64."""
    if device.type in ("cpu", "cuda", "mps", "xpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


class LaplacianOperator:
    r"""A neuron graph's Laplacian, prepared once, that evaluates
    :math:`\mathbf{a}^\top \mathbf{L} \mathbf{a}` for a batch of activations.

    Built from ``(data, normalization)``, it validates the graph once and keeps, on the
    graph's device, the one-direction edge list (and :math:`1/\sqrt{d_i}` for ``"sym"``);
    the dense ``[N, N]`` matrix and the sparse CSR matrix are built on first use and
    cached per dtype. Calling it on ``x`` of shape ``[B, N]`` or ``[B, N, *]`` (dimension 1
    holds the neurons, e.g. the channels of a conv feature map, whose every spatial
    position is a sample) returns the per-sample form, of shape ``[B]`` or ``[B, *]``.

    Methods (all exact, same values up to rounding):

    * ``"dense"``: :math:`\mathbf{L}\mathbf{X}` with a dense matrix (matmul);
    * ``"sparse"``: :math:`\mathbf{L}\mathbf{X}` with a sparse CSR matrix; how is the
      attribute ``sparse_product``: ``"csr"`` (default), the CSR product of MKL (CPU) or
      cuSPARSE on node-major blocks of samples, or ``"segment"``, which reads and writes a
      ``[B, N]`` batch as rows: gather, weight, and a segment sum over every node's CSR
      entries, with torch-scatter's ``segment_csr`` when it is installed (attribute
      ``segment_backend``), else ``torch.segment_reduce``; several times slower on the CPU
      (``docs/performance.md``), kept for devices and comparisons;
    * ``"edge"``: :math:`\sum_{i<j} w_{ij}(a_i - a_j)^2` by ``index_select`` on the edges;
    * ``"auto"``: picked from the size of the graph, the number of samples and the device
      (see :meth:`resolve_method`).

    ``"dense"`` and ``"sparse"`` (both products) use a custom autograd function whose backward
    reuses the forward product (:math:`\nabla_{\mathbf{a}} = 2\mathbf{L}\mathbf{a}` times
    the incoming gradient), so a training step costs one product; it is differentiable once
    (not for double backward) and treats the graph as a constant (no gradient to edge
    weights).
    ``"edge"`` is plain autograd.

    The method is chosen with the constructor's ``method`` (also a settable attribute) and
    can be overridden per call: ``op(x, method="edge")``. ``x`` must be on the operator's
    device: move the operator with :meth:`to`. Half-precision inputs are computed (and
    returned) in float32.

    Args:
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` (:math:`\mathbf{D}-\mathbf{W}`) or
            ``"sym"``. (default: ``None``)
        method (str): ``"auto"``, ``"dense"``, ``"sparse"`` or ``"edge"``.
            (default: ``"auto"``)
        check (bool): validate ``data`` with :func:`gsr_pyg.graphs.check_graph`; ``False``
            only for a graph already checked or built by this library (a refresh installs
            a learned graph without checking it twice). (default: ``True``)

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> op = LaplacianOperator(data)          # once, when the graph is installed
        >>> op(torch.tensor([[0., 1., 3.], [1., 1., 1.]]))   # every step: a_b^T L a_b
        tensor([5., 0.])
    """

    def __init__(self, data, normalization: str | None = None, method: str = "auto", *,
                 check: bool = True):
        check_normalization(normalization)
        self.method = method
        if check:
            num_nodes, edge_index, edge_weight = graph_tensors(data)
        else:  # a graph the caller has checked, or that this library built
            num_nodes, edge_index = int(data.num_nodes), data.edge_index
            edge_weight = edge_weights(data, work_dtype(edge_index.device))
        self.num_nodes = num_nodes
        self.normalization = normalization
        self._num_edges = int(edge_index.shape[1]) // 2  # both directions of every edge
        self._graph = (edge_index, edge_weight)
        self._edge_arrays: tuple[Tensor, Tensor, Tensor, Tensor | None] | None = None
        self._entries = _laplacian_entries(num_nodes, edge_index, edge_weight, normalization)
        self._cache: dict[tuple[str, torch.dtype], Tensor] = {}
        self.sparse_product = "csr"
        #: The segment sums of ``sparse_product="segment"``: ``"torch_scatter"`` when
        #: installed, else ``"torch"`` (settable, e.g. to compare them).
        self.segment_backend = SEGMENT_BACKENDS[0]

    # ----------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        """The default method of :meth:`__call__` (settable)."""
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        check_choice(value, "method", METHODS)
        self._method = value

    @property
    def sparse_product(self) -> str:
        """How ``"sparse"`` multiplies: ``"csr"`` or ``"segment"`` (settable)."""
        return self._sparse_product

    @sparse_product.setter
    def sparse_product(self, value: str) -> None:
        check_choice(value, "sparse_product", SPARSE_PRODUCTS)
        self._sparse_product = value

    @property
    def device(self) -> torch.device:
        return self._entries[0].device

    @property
    def num_edges(self) -> int:
        """Number of undirected edges (each counted once)."""
        return self._num_edges

    def to(self, device: torch.device | str) -> LaplacianOperator:
        """Move the operator to ``device`` (in place; returns ``self``)."""
        device = torch.device(device)
        if device == self.device:
            return self
        work = work_dtype(device)
        edge_index, edge_weight = self._graph
        self._graph = (edge_index.to(device), edge_weight.to(device=device, dtype=work))
        self._edge_arrays = None
        index, value = self._entries
        self._entries = (index.to(device), value.to(device=device, dtype=work))
        self._cache = {}
        return self

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(num_nodes={self.num_nodes}, "
            f"num_edges={self.num_edges}, normalization={self.normalization!r}, "
            f"method={self.method!r}, device={self.device})"
        )

    # ----------------------------------------------------------------------------------
    @property
    def num_entries(self) -> int:
        """Stored entries of the sparse :math:`\\mathbf{L}` (both directions of every edge
        and the diagonal of every node with an edge)."""
        return int(self._entries[1].numel())

    def resolve_method(self, num_samples: int, device: torch.device | str | None = None) -> str:
        """The method ``"auto"`` uses for ``num_samples`` columns (samples times spatial
        positions) on ``device`` (default: the operator's).

        On the CPU: ``"dense"`` while :math:`N^2 \\le 16\\,\\mathrm{nnz}(\\mathbf{L})`, else
        ``"sparse"``. A dense product costs :math:`N^2` multiply-adds per sample, the sparse
        one :math:`\\mathrm{nnz}` gathers, each about 16 times dearer here; the rule puts
        the switch at ``N`` of about 16 times the mean degree (256 for a kNN graph with
        k=8, 80 for a grid). The edge form is never the fastest, because its backward
        scatters into the input. Forward and backward of ``op(x).mean()`` for ``x`` of
        shape ``[B, N]``, float32, one thread of a shared 2-core CPU, kNN graphs (k=8,
        ~15 entries per row), ms as dense / sparse:

        ======  ==============  ==============  ==============
        N       B = 64          B = 256         B = 1024
        ======  ==============  ==============  ==============
        64      0.47 / 0.57     0.41 / 0.59     0.75 / 1.16
        128     0.50 / 0.74     0.65 / 0.82     1.46 / 2.26
        256     0.42 / 0.40     0.83 / 0.82     3.22 / 3.60
        512     1.74 / 1.26     4.05 / 2.78     13.3 / 11.9
        1024    4.25 / 1.04     10.4 / 3.36     38.3 / 13.6
        4096    65.7 / 4.33     177 / 14.2      595 / 75.0
        16384   - / 21.8        - / 70.1        - / 464
        ======  ==============  ==============  ==============

        On CUDA a dense ``[N, N]`` GEMM is one well-tuned kernel that stays cheap while the
        matrix is small, so dense up to ``N = 1024`` and sparse CSR above (not timed here).
        Other accelerators (MPS, XPU) get dense or the edge form, which needs only
        ``index_select``, as their sparse CSR support varies.
        """
        device = self.device if device is None else torch.device(device)
        n = self.num_nodes
        if device.type == "cuda":
            return "dense" if n <= 1024 else "sparse"
        if device.type != "cpu":
            return "dense" if n <= 1024 else "edge"
        return "dense" if n * n <= 16 * self.num_entries else "sparse"

    def _matrix(self, kind: str, dtype: torch.dtype) -> Tensor:
        key = (kind, dtype)
        matrix = self._cache.get(key)
        if matrix is None:
            index, value = self._entries
            if kind == "dense":
                # the entries are distinct (a checked graph and its diagonal): no coalescing
                matrix = value.new_zeros(self.num_nodes, self.num_nodes, dtype=dtype)
                matrix[index[0], index[1]] = value.to(dtype)
            else:
                coo = torch.sparse_coo_tensor(
                    index, value.to(dtype), (self.num_nodes, self.num_nodes),
                    check_invariants=False).coalesce()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Sparse CSR tensor support")
                    matrix = coo.to_sparse_csr()
                    if matrix.values().numel() < 2**31 - 1:
                        # 32-bit indices: MKL (CPU) would convert 64-bit ones at every call
                        matrix = torch.sparse_csr_tensor(
                            matrix.crow_indices().int(), matrix.col_indices().int(),
                            matrix.values(), matrix.shape, check_invariants=False)
            self._cache[key] = matrix
        return matrix

    def _segment_parts(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor, str]:
        """The CSR arrays of ``"segment"``, 64-bit, and the segment-sum backend."""
        key = (f"segment {self.segment_backend}", dtype)
        parts = self._cache.get(key)
        if parts is None:
            matrix = self._matrix("sparse", dtype)
            parts = (matrix.crow_indices().long(), matrix.col_indices().long(),
                     matrix.values(), self.segment_backend)
            self._cache[key] = parts
        return parts

    def _cast(self, name: str, value: Tensor, dtype: torch.dtype) -> Tensor:
        """``value`` in ``dtype``, converted once per operator."""
        key = (name, dtype)
        cast = self._cache.get(key)
        if cast is None:
            cast = self._cache[key] = value.to(dtype)
        return cast

    def _edges(self) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """``(source, target, weight, inv_sqrt_degree)`` of the edges ``i < j`` for
        ``"edge"`` (made at its first use: a refresh's operator mostly never needs them)."""
        if self._edge_arrays is None:
            edge_index, edge_weight = self._graph
            upper = edge_index[0] < edge_index[1]
            inv_sqrt = None
            if self.normalization == "sym":
                degree = edge_weight.new_zeros(self.num_nodes).index_add_(0, edge_index[0],
                                                                          edge_weight)
                inv_sqrt = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
            self._edge_arrays = (edge_index[0, upper], edge_index[1, upper],
                                 edge_weight[upper], inv_sqrt)
        return self._edge_arrays

    def _edge_form(self, columns: Tensor) -> Tensor:
        dtype = columns.dtype
        source, target, weight, inv_sqrt = self._edges()
        if inv_sqrt is not None:
            columns = columns * self._cast("inv_sqrt_degree", inv_sqrt, dtype).unsqueeze(1)
        difference = columns.index_select(0, source) - columns.index_select(0, target)
        return self._cast("edge weight", weight, dtype) @ difference.square()

    def __call__(self, x: Tensor, method: str | None = None) -> Tensor:
        """Per-sample :math:`\\mathbf{a}^\\top \\mathbf{L} \\mathbf{a}` of ``x``
        ``[B, N, *]`` -> ``[B, *]``."""
        _check_activations(x, self.num_nodes)
        _check_same_device(x, self)
        method = self.method if method is None else method
        if method != self.method:
            check_choice(method, "method", METHODS)
        samples, node_dim, out_shape = _batch_layout(x, self.num_nodes)
        if method == "auto":
            method = self.resolve_method(samples.numel() // self.num_nodes, x.device)
        with _without_autocast(x.device):
            if method == "edge":
                columns = samples if node_dim == 0 else samples.t()
                values = self._edge_form(columns)
            else:
                matrix = (self._segment_parts(samples.dtype)
                          if method == "sparse" and self.sparse_product == "segment"
                          else self._matrix(method, samples.dtype))
                values = _QuadraticFormWithProduct.apply(samples, matrix, node_dim)
        return values if out_shape is None else values.reshape(out_shape)


def quadratic_form(x: Tensor, data, normalization: str | None = None,
                   method: str = "auto") -> Tensor:
    r"""Per-sample Laplacian quadratic form :math:`\mathbf{a}_b^\top \mathbf{L}\mathbf{a}_b`.

    .. math::
        \mathbf{a}^\top\mathbf{L}\mathbf{a} = \sum_{\{i,j\} \in E} w_{ij}(a_i - a_j)^2
        \quad\text{or, for "sym",}\quad
        \sum_{\{i,j\} \in E} w_{ij}\Big(\frac{a_i}{\sqrt{d_i}} - \frac{a_j}{\sqrt{d_j}}\Big)^2

    (isolated nodes contribute 0). ``x`` is ``[B, N]`` or ``[B, N, *]``: dimension 1 holds
    the graph's nodes (the channels of a conv feature map) and every other index is a
    sample; the result drops dimension 1 (``[B]`` or ``[B, *]``). The penalty of graph
    spectral regularization is ``quadratic_form(x, data).mean()``.

    This builds a :class:`LaplacianOperator` on the device of ``x`` each call; in a
    training loop build the operator once and call it.

    Args:
        x (Tensor): activations, floating point.
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        method (str): ``"auto"``, ``"dense"``, ``"sparse"`` or ``"edge"``; see
            :class:`LaplacianOperator`. (default: ``"auto"``)

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> quadratic_form(torch.tensor([[0., 1., 3.]]), data)
        tensor([5.])
    """
    check_tensor(x, "x", min_ndim=2, floating=True)
    operator = LaplacianOperator(data, normalization, method).to(x.device)
    return operator(x)


# --------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------

def connected_components(data, *, check: bool = True) -> tuple[int, Tensor]:
    r"""Connected components of a neuron graph, without an eigendecomposition.

    The number of components equals the multiplicity of the eigenvalue 0 of
    :math:`\mathbf{L}`. Computed by label propagation on the graph's device, or, for graphs
    that need many rounds (long chains), with
    :func:`scipy.sparse.csgraph.connected_components` on the CPU (this is not a training hot
    path). Only the structure is read: weights are ignored (every edge in the data model has
    a weight > 0).

    ``check=False`` skips :func:`gsr_pyg.graphs.check_graph`, for a graph already checked or
    built by this library.

    Returns:
        ``(num_components, labels)`` with ``labels`` a ``[N]`` long tensor on the device
        of ``data.edge_index``, numbered ``0..C-1`` in order of first appearance (node 0
        is in component 0).

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), num_nodes=5)
        >>> connected_components(data)
        (3, tensor([0, 0, 1, 1, 2]))
    """
    if check:
        check_graph(data, name="data")
        num_nodes = check_int(int(data.num_nodes), "data.num_nodes", minimum=1)
    else:
        num_nodes = int(data.num_nodes)
    edge_index = data.edge_index
    labels = _propagated_labels(num_nodes, edge_index)
    if labels is None:
        labels = _scipy_labels(num_nodes, edge_index)
    # the smallest node of each component, ascending: the order of first appearance
    roots, labels = torch.unique(labels, return_inverse=True)
    return int(roots.numel()), labels


# Label propagation settles in about log2(diameter) rounds with pointer jumping: a learned
# graph takes a handful. Graphs that need more (long chains) go to scipy.
_PROPAGATION_ROUNDS = 12


def _propagated_labels(num_nodes: int, edge_index: Tensor) -> Tensor | None:
    """Every node's smallest reachable node, by min-label propagation with pointer jumping,
    on the graph's device (a few small operations, no trip to scipy); None when it has not
    settled within :data:`_PROPAGATION_ROUNDS` rounds.

    Invariant: ``labels[i]`` is a node of ``i``'s component and ``labels[i] <= i``; at a fixed
    point the labels agree across every edge, so each component carries its smallest node.
    """
    labels = torch.arange(num_nodes, device=edge_index.device)
    if edge_index.size(1) == 0:
        return labels
    row, col = edge_index[0], edge_index[1]
    for _ in range(_PROPAGATION_ROUNDS):
        new = labels.scatter_reduce(0, row, labels[col], "amin")
        new = new[new]
        if torch.equal(new, labels):
            return labels
        labels = new
    return None


def _scipy_labels(num_nodes: int, edge_index: Tensor) -> Tensor:
    """Every node's smallest reachable node, with scipy's union-find on the CPU."""
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components as scipy_components

    rows, cols = edge_index.cpu().numpy()
    ones = np.ones(rows.shape[0])  # float64 and int32 indices: what scipy works in
    if 0 < rows.size < 2**31 and num_nodes < 2**31 and bool((rows[1:] >= rows[:-1]).all()):
        # sorted rows (a coalesced graph): the CSR index pointer is a cumulative count
        indptr = np.zeros(num_nodes + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=num_nodes), out=indptr[1:])
        adjacency = sp.csr_matrix((ones, cols.astype(np.int32), indptr),
                                  shape=(num_nodes, num_nodes))
    else:
        adjacency = sp.csr_matrix((ones, (rows, cols)), shape=(num_nodes, num_nodes))
    num, raw = scipy_components(adjacency, directed=False)
    smallest = np.full(num, num_nodes, dtype=np.int64)
    np.minimum.at(smallest, raw, np.arange(num_nodes))
    return torch.from_numpy(smallest[raw]).to(edge_index.device)


def eigenbasis(data, normalization: str | None = None, k: int | None = None,
               dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending) and eigenvectors of the graph Laplacian.

    :math:`\mathbf{L}\mathbf{u}_i = \lambda_i \mathbf{u}_i`,
    :math:`0 = \lambda_1 \le \dots \le \lambda_N`, from a dense symmetric
    eigendecomposition (:func:`torch.linalg.eigh`, computed in float64): for plots and
    metrics, not for training.

    Args:
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        k (int, optional): keep the ``k`` smallest. (default: all ``N``)
        dtype (torch.dtype, optional): the dtype of the result, e.g. ``torch.float64`` to
            keep the precision of the decomposition. (default: the dtype of
            ``data.edge_weight``, float32 when the graph has no weights)

    Returns:
        ``(eigenvalues [k], eigenvectors [N, k])`` (column ``i`` belongs to eigenvalue
        ``i``), on the graph's device.

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> eigenbasis(data)[0].round(decimals=4)
        tensor([0., 1., 3.])
    """
    check_normalization(normalization)
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    if k is not None:
        check_int(k, "k", minimum=1, maximum=num_nodes)
    given = getattr(data, "edge_weight", None)
    out_dtype = given.dtype if given is not None else torch.float32
    if dtype is not None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {describe(dtype)}")
        out_dtype = dtype
    index, value = _laplacian_entries(num_nodes, edge_index, edge_weight, normalization)
    matrix = torch.sparse_coo_tensor(
        index, value, (num_nodes, num_nodes), check_invariants=False
    ).to_dense()
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    if k is not None:
        eigenvalues, eigenvectors = eigenvalues[:k], eigenvectors[:, :k]
    return eigenvalues.to(out_dtype), eigenvectors.to(out_dtype)


# --------------------------------------------------------------------------------------
# the spectral family: filtered forms a^T h(L) a
# --------------------------------------------------------------------------------------

FILTER_METHODS = ("auto", "exact", "chebyshev")
#: Method ``"auto"`` of :class:`FilteredOperator` uses the exact eigenbasis up to this many
#: nodes and a Chebyshev polynomial above: a float64 ``eigh`` of 1,024 nodes takes about
#: 0.3 s on one core (2,048: 1.7 s, growing as N^3), and the dense h(L) it gives costs N^2
#: multiply-adds per sample, against K sparse products for Chebyshev.
EXACT_MAX_NODES = 1024
#: The order K of a Chebyshev polynomial when none is given.
DEFAULT_ORDER = 20
MAX_ORDER = 1000
# A response and its polynomial are compared on this many points of [0, lambda_max] (evenly
# spaced in theta, lambda = lambda_max (1 + cos theta) / 2); their spacing also sizes the
# margin that keeps the polynomial >= 0.
_GRID_POINTS = 2**18 + 1
_FIT_NODES = 1024  # at least this many Chebyshev-Gauss nodes for the coefficients


def _laplacian_response(eigenvalues: Tensor) -> Tensor:
    return eigenvalues.clone()


def _power_response(eigenvalues: Tensor, p: float) -> Tensor:
    return eigenvalues.pow(p)


def _heat_response(eigenvalues: Tensor, t: float) -> Tensor:
    return -torch.expm1(-t * eigenvalues)


def _high_pass_response(eigenvalues: Tensor, cutoff: float, sharpness: float) -> Tensor:
    step = torch.sigmoid(sharpness * (eigenvalues / cutoff - 1.0))
    floor = torch.sigmoid(eigenvalues.new_full((), -sharpness))
    # clamp: the vector and the scalar sigmoid may round apart at lambda = 0
    return ((step - floor) / (1.0 - floor)).clamp_min(0.0)


@dataclass(frozen=True)
class _Preset:
    function: Callable[..., Tensor]
    required: tuple[str, ...] = ()
    defaults: tuple[tuple[str, float], ...] = ()


_PRESETS = {
    "laplacian": _Preset(_laplacian_response),
    "power": _Preset(_power_response, ("p",)),
    "heat": _Preset(_heat_response, ("t",)),
    "high_pass": _Preset(_high_pass_response, ("cutoff",), (("sharpness", 10.0),)),
}
#: The preset responses of :class:`SpectralFilter`.
RESPONSES = tuple(_PRESETS)


class SpectralFilter:
    r"""A response :math:`h \ge 0` on the Laplacian spectrum, and how the filtered form
    :math:`\mathbf{a}^\top h(\mathbf{L})\mathbf{a}` is computed.

    .. math::
        \mathbf{a}^\top h(\mathbf{L})\,\mathbf{a} = \sum_k h(\lambda_k)\,|\hat a_k|^2,
        \qquad \hat a_k = \mathbf{u}_k^\top\mathbf{a},

    with :math:`(\lambda_k, \mathbf{u}_k)` the eigenpairs of :math:`\mathbf{L}`
    (:func:`laplacian`, either normalization). Presets, for :math:`\lambda \ge 0`:

    * ``"laplacian"``: :math:`h(\lambda) = \lambda`, the penalty of graph spectral
      regularization, computed by :class:`LaplacianOperator` (no eigendecomposition);
    * ``"power"``, parameter ``p > 0``: :math:`h = \lambda^p`; ``p > 1`` charges the high
      frequencies more than ``"laplacian"`` does and the low ones less, ``p < 1`` the
      opposite;
    * ``"heat"``, parameter ``t > 0``: :math:`h = 1 - e^{-t\lambda}`, the energy that heat
      diffusion for time :math:`t` removes; about :math:`t\lambda` for
      :math:`\lambda \ll 1/t`, then saturating at 1 (all high frequencies charged alike);
    * ``"high_pass"``, parameters ``cutoff`` :math:`c > 0` and ``sharpness``
      :math:`s > 0` (default 10): a smooth step
      :math:`h = \frac{\sigma(s(\lambda/c - 1)) - \sigma(-s)}{1 - \sigma(-s)}`,
      :math:`\sigma(z) = 1/(1 + e^{-z})`: exactly 0 at :math:`\lambda = 0`, about 1/2 at
      the cutoff, close to 1 above it; frequencies well below the cutoff are almost free
      (for :math:`s = 10`, :math:`h(c/2) \approx 0.007`, and h rises from 0.1 to 0.9 over
      :math:`\lambda \in [0.78c, 1.22c]`).

    A callable gets a float64 tensor of eigenvalues, clamped at 0 (:math:`\mathbf{L}` is
    positive semi-definite, so a negative one is rounding), and returns :math:`h` of the
    same shape; it takes no parameters (bind them in the callable). Wherever it is
    evaluated (the spectrum for ``"exact"``, a dense grid of :math:`[0, \lambda_{max}]`
    for ``"chebyshev"``) a response must be finite and :math:`\ge 0`, or it is refused:
    :math:`\mathbf{a}^\top h(\mathbf{L})\mathbf{a}` must be bounded below to be a penalty.

    Args:
        response (str or callable): a preset name or a callable.
            (default: ``"laplacian"``)
        method (str): ``"exact"``: :math:`h(\mathbf{L}) = \mathbf{U}\operatorname{diag}(h)
            \mathbf{U}^\top` from a float64 ``eigh``, kept dense; ``"chebyshev"``: a
            polynomial of order ``order`` in the scaled Laplacian (:func:`chebyshev_fit`),
            ``order`` sparse products per evaluation, no eigendecomposition; ``"auto"``:
            exact up to :data:`EXACT_MAX_NODES` (1,024) nodes, Chebyshev above.
            ``"laplacian"`` needs neither and is exact unless ``"chebyshev"`` is asked for.
            (default: ``"auto"``)
        order (int): the order K of the Chebyshev polynomial, 1 to 1,000.
            (default: ``20``)
        **params: the preset's parameters (``p``, ``t``, ``cutoff``, ``sharpness``).

    Example:
        >>> heat = SpectralFilter("heat", t=2.0)
        >>> heat(torch.tensor([0.0, 0.5], dtype=torch.float64))
        tensor([0.0000, 0.6321], dtype=torch.float64)
        >>> heat.config()
        {'response': 'heat', 'params': {'t': 2.0}, 'method': 'auto', 'order': 20}
    """

    def __init__(self, response: str | Callable[[Tensor], Tensor] = "laplacian",
                 method: str = "auto", order: int = DEFAULT_ORDER, **params: float):
        self._setup(response, method, order, params, "response")

    def _setup(self, response, method: str, order: int, params: Mapping, name: str) -> None:
        check_choice(method, "method", FILTER_METHODS)
        self.method = method
        self.order = check_int(order, "order", minimum=1, maximum=MAX_ORDER)
        if isinstance(response, str):
            self.name = response
            self.params = _preset_params(response, params, name)
            self._function = _PRESETS[response].function
        elif callable(response):
            if params:
                raise ValueError(
                    f"{name} is a callable, which takes no parameters (bind them in the "
                    f"callable), got {sorted(params)}")
            self.name, self.params, self._function = "callable", {}, response
        else:
            raise TypeError(f"{name} must be a preset name {RESPONSES} or a callable on "
                            f"eigenvalues, got {describe(response)}")

    # ----------------------------------------------------------------------------------
    @property
    def function_name(self) -> str:
        """``module.qualname`` of a callable response (what :meth:`config` records); the
        preset's name otherwise."""
        if self.name != "callable":
            return self.name
        function = self._function
        module = getattr(function, "__module__", None) or ""
        qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
        name = getattr(function, "__name__", None)
        if name and getattr(sys.modules.get(module), name, None) is function:
            qualname = name  # reachable as module.name (torch.cos, not its builtin class)
        return f"{module}.{qualname}" if module else qualname

    @property
    def is_laplacian(self) -> bool:
        """Whether the form is :math:`\\mathbf{a}^\\top\\mathbf{L}\\mathbf{a}` computed
        exactly by :class:`LaplacianOperator` (the preset ``"laplacian"``, method not
        ``"chebyshev"``)."""
        return self.name == "laplacian" and self.method != "chebyshev"

    def _label(self) -> str:
        return f"{self.name!r}" if self.name != "callable" else f"callable {self.function_name}"

    def __call__(self, eigenvalues: Tensor, where: str = "the given eigenvalues") -> Tensor:
        r""":math:`h(\lambda)` of a floating-point tensor of eigenvalues (clamped at 0),
        checked to be finite and :math:`\ge 0`; ``where`` names the values in errors."""
        check_tensor(eigenvalues, "eigenvalues", floating=True)
        lam = eigenvalues.clamp_min(0.0)
        values = self._function(lam, **self.params)
        if not isinstance(values, Tensor) or values.shape != lam.shape:
            raise ValueError(
                f"response {self._label()} must return a tensor of the shape of its input "
                f"{tuple(lam.shape)}, got {describe(values)}")
        values = values.to(lam.dtype)
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            at = int((~finite).flatten().nonzero()[0])
            raise ValueError(
                f"response {self._label()} is not finite on {where}: "
                f"h({float(lam.flatten()[at]):.6g}) = {float(values.flatten()[at])}")
        if bool((values < 0).any()):
            at = int(values.flatten().argmin())
            raise ValueError(
                f"response {self._label()} is negative on {where}: "
                f"h({float(lam.flatten()[at]):.6g}) = {float(values.flatten()[at]):.6g}; "
                f"a penalty a^T h(L) a must be bounded below, so h must be >= 0 there")
        return values

    # ----------------------------------------------------------------------------------
    def config(self) -> str | dict:
        """The filter as plain data: ``"laplacian"`` for the default penalty, else
        ``{"response", "params" (presets with parameters) or "function" (a callable's
        ``module.qualname``), "method", "order"}``."""
        if self.is_laplacian:
            return "laplacian"
        entry: dict = {"response": self.name}
        if self.name == "callable":
            entry["function"] = self.function_name
        elif self.params:
            entry["params"] = dict(self.params)
        entry.update(method=self.method, order=self.order)
        return entry

    @classmethod
    def from_config(cls, config: str | Mapping) -> SpectralFilter:
        """Rebuild a preset filter from :meth:`config` (a callable cannot be rebuilt from
        its name).

        Example:
            >>> SpectralFilter.from_config({"response": "power", "params": {"p": 2.0}})
            SpectralFilter('power', p=2.0, method='auto', order=20)
        """
        if config == "laplacian":
            return cls()
        if not isinstance(config, Mapping) or config.get("response") not in RESPONSES:
            raise ValueError(f"a filter config must be 'laplacian' or a mapping with a preset "
                             f"'response' {RESPONSES}, got {describe(config)}")
        return cls(config["response"], method=config.get("method", "auto"),
                   order=config.get("order", DEFAULT_ORDER), **config.get("params", {}))

    def __eq__(self, other) -> bool:
        if not isinstance(other, SpectralFilter):
            return NotImplemented
        return self.config() == other.config() and self._function is other._function

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        first = repr(self.name) if self.name != "callable" else self.function_name
        params = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return (f"{self.__class__.__name__}({first}{params}, method={self.method!r}, "
                f"order={self.order})")


def _preset_params(preset: str, params: Mapping, name: str) -> dict[str, float]:
    """The checked parameters of a preset (defaults filled in), refusing unknown and missing
    ones by name."""
    if preset not in _PRESETS:
        close = closest_names(preset, RESPONSES)
        hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
        raise ValueError(f"{name} must be a preset name {RESPONSES} or a callable on "
                         f"eigenvalues, got {preset!r}{hint}")
    spec = _PRESETS[preset]
    known = spec.required + tuple(key for key, _ in spec.defaults)
    unknown = sorted(set(params) - set(known))
    if unknown:
        takes = f"parameters {known}" if known else "no parameters"
        raise ValueError(f"{name} {preset!r} takes {takes}, got unknown parameter "
                         f"{', '.join(repr(u) for u in unknown)}")
    missing = [key for key in spec.required if key not in params]
    if missing:
        raise ValueError(f"{name} {preset!r} needs the parameter {', '.join(missing)} "
                         f"(a number > 0), e.g. ({preset!r}, {{{missing[0]!r}: 1.0}})")
    given = {**dict(spec.defaults), **params}
    return {key: check_positive(given[key], f"parameter {key} of {name} {preset!r}")
            for key in known}


def as_spectral_filter(value, name: str = "response") -> SpectralFilter:
    """A :class:`SpectralFilter` from what users write: a filter, a preset name, a callable,
    or a pair ``(preset name, {parameter: value})``; ``name`` names it in errors.

    Example:
        >>> as_spectral_filter(("high_pass", {"cutoff": 0.5}))
        SpectralFilter('high_pass', cutoff=0.5, sharpness=10.0, method='auto', order=20)
    """
    if isinstance(value, SpectralFilter):
        return value
    params: Mapping = {}
    if isinstance(value, tuple):
        if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], Mapping):
            raise TypeError(f"{name} as a pair must be (preset name, {{parameter: value}}), "
                            f"got {describe(value)}")
        value, params = value
    spectral_filter = SpectralFilter.__new__(SpectralFilter)
    spectral_filter._setup(value, "auto", DEFAULT_ORDER, params, name)
    return spectral_filter


def lambda_max_bound(data, normalization: str | None = None) -> float:
    r"""An upper bound on the largest Laplacian eigenvalue, without an eigendecomposition.

    .. math::
        \lambda_{max}(\mathbf{D} - \mathbf{W}) \le \max_{\{i,j\} \in E} (d_i + d_j)
        \;\le\; 2\max_i d_i, \qquad
        \lambda_{max}(\mathbf{I} - \mathbf{D}^{-1/2}\mathbf{W}\mathbf{D}^{-1/2}) \le 2.

    The combinatorial bound (Anderson and Morley, 1985) holds for positive weights: the
    non-zero eigenvalues of :math:`\mathbf{L} = \mathbf{B}\mathbf{B}^\top` are those of the
    edge matrix :math:`\mathbf{B}^\top\mathbf{B}`, which is similar to a non-negative
    matrix whose row of edge :math:`\{i, j\}` sums to :math:`d_i + d_j`. It is tighter than
    Gershgorin's :math:`2 \max_i d_i`, and exact for regular bipartite graphs. A graph
    without edges gives 0. This is the :math:`\lambda_{max}` of :class:`FilteredOperator`'s
    Chebyshev polynomials (a bound, not an estimate: every eigenvalue must lie in
    :math:`[0, \lambda_{max}]` for the error bound to hold).

    Example:
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> lambda_max_bound(path)     # the path's eigenvalues are 0, 1, 3
        3.0
    """
    check_normalization(normalization)
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    if edge_index.size(1) == 0:
        return 0.0
    if normalization == "sym":
        return 2.0
    degree = edge_weight.new_zeros(num_nodes).index_add_(0, edge_index[0], edge_weight)
    return float((degree[edge_index[0]] + degree[edge_index[1]]).max())


def _clenshaw(coefficients: Tensor, x: Tensor) -> Tensor:
    r""":math:`\sum_k c_k T_k(x)` by Clenshaw's recurrence (``x`` in [-1, 1])."""
    following = torch.zeros_like(x)
    current = torch.zeros_like(x)
    for c in coefficients.flip(0)[:-1].tolist():
        current, following = 2.0 * x * current - following + c, current
    return x * current - following + float(coefficients[0])


@dataclass(frozen=True)
class ChebyshevFit:
    r"""A polynomial :math:`p_K` standing for a response :math:`h` on
    :math:`[0, \lambda_{max}]`:

    .. math::
        p_K(\lambda) = \sum_{k=0}^{K} c_k\,T_k\!\Big(\frac{2\lambda}{\lambda_{max}} - 1\Big),
        \qquad
        \big|\mathbf{a}^\top h(\mathbf{L})\mathbf{a} - \mathbf{a}^\top p_K(\mathbf{L})\mathbf{a}
        \big| \le \varepsilon\,\lVert\mathbf{a}\rVert^2,

    with :math:`T_k` the Chebyshev polynomials and :math:`\varepsilon` = ``max_error``
    (for every :math:`\mathbf{a}`, as long as the spectrum lies in
    :math:`[0, \lambda_{max}]`). Made by :func:`chebyshev_fit`.

    Attributes:
        coefficients (Tensor): :math:`c_0, \dots, c_K`, float64 (``lift`` included).
        lambda_max (float): the right end of the interval.
        max_error (float): :math:`\max |h - p_K|` over a grid of 262,145 points of
            :math:`[0, \lambda_{max}]` (see :func:`chebyshev_fit`).
        lift (float): the constant added to the truncated series so that
            :math:`p_K \ge 0` on the whole interval (0 when it already was); part of
            ``max_error``.
    """

    coefficients: Tensor
    lambda_max: float
    max_error: float
    lift: float

    @property
    def order(self) -> int:
        return self.coefficients.numel() - 1

    def __call__(self, eigenvalues: Tensor) -> Tensor:
        """:math:`p_K` at ``eigenvalues`` (a floating-point tensor), in float64."""
        check_tensor(eigenvalues, "eigenvalues", floating=True)
        x = 2.0 * eigenvalues.double() / self.lambda_max - 1.0
        return _clenshaw(self.coefficients.to(x.device), x)


def chebyshev_fit(response, lambda_max: float, order: int | None = None) -> ChebyshevFit:
    r"""The Chebyshev polynomial of order K that stands for ``response`` on
    :math:`[0, \lambda_{max}]`, with its error.

    The coefficients are those of the truncated Chebyshev series of :math:`h`,
    :math:`c_k = \frac{2 - \delta_{k0}}{\pi}\int_0^\pi h(\lambda(\cos\theta))\cos k\theta
    \,d\theta` (Gauss-Chebyshev quadrature on :math:`\max(1024, 4(K+1))` nodes), as in
    Hammond, Vandergheynst and Gribonval (2011) and PyG's ``ChebConv`` (which scales
    :math:`\mathbf{L}` the same way, :math:`2\mathbf{L}/\lambda_{max} - \mathbf{I}`).

    The response and the polynomial are compared on a grid of :math:`G` = 262,145 points,
    :math:`\lambda_i = \lambda_{max}(1 + \cos\theta_i)/2` with :math:`\theta_i` evenly
    spaced in :math:`[0, \pi]` (dense everywhere, densest at both ends; the polynomial
    there is one real FFT). A truncated series of :math:`h \ge 0` can dip below 0 near
    the places where :math:`h` is 0 or bends sharply, and a penalty
    :math:`\mathbf{a}^\top p_K(\mathbf{L})\mathbf{a}` with :math:`p_K(\lambda_k) < 0`
    would be unbounded below. So :math:`p_K` is lifted by a constant ``lift``: the depth
    of its lowest grid value, plus the most it can fall between two grid points,
    :math:`\frac{\delta^2}{8}\max_\theta|\partial_\theta^2 p_K(\cos\theta)| \le
    \frac{\delta^2}{8}K^2\sum_k |c_k|` (Bernstein's inequality; :math:`\delta =
    \pi/(G-1)`), so that :math:`p_K \ge 0` on the whole interval. That margin is
    :math:`7\cdot10^{-9}\sum_k|c_k|` for ``order=20``, :math:`2\cdot10^{-7}\sum_k|c_k|`
    for 100. The lift adds ``lift`` :math:`\cdot\lVert\mathbf{a}\rVert^2` to the form; it
    is part of ``max_error``, which reports :math:`\max |h - p_K|` on the grid after the
    lift. Where ``max_error`` is large compared with the values of :math:`h` that
    matter, raise ``order``.

    Args:
        response: a :class:`SpectralFilter`, a preset name, a callable or a pair
            ``(name, {parameter: value})`` (:func:`as_spectral_filter`); it must be finite
            and :math:`\ge 0` on the grid and the quadrature nodes.
        lambda_max (float): the right end of the interval, > 0 (:func:`lambda_max_bound`).
        order (int, optional): K. (default: the filter's ``order``, 20)

    Example:
        >>> fit = chebyshev_fit(("heat", {"t": 1.0}), lambda_max=2.0, order=10)
        >>> fit.max_error < 1e-7
        True
        >>> float(fit(torch.tensor([1.0]))[0])    # 1 - exp(-1) = 0.63212...
        0.632120...
    """
    spectral_filter = as_spectral_filter(response)
    lambda_max = check_positive(lambda_max, "lambda_max")
    order = spectral_filter.order if order is None else check_int(
        order, "order", minimum=1, maximum=MAX_ORDER)
    num_nodes = max(_FIT_NODES, 4 * (order + 1))
    theta = math.pi * (torch.arange(num_nodes, dtype=torch.float64) + 0.5) / num_nodes
    nodes = lambda_max * (torch.cos(theta) + 1.0) / 2.0
    where = f"[0, lambda_max={lambda_max:.6g}]"
    values = spectral_filter(nodes, where=where)
    k = torch.arange(order + 1, dtype=torch.float64)
    coefficients = (2.0 / num_nodes) * (torch.cos(torch.outer(k, theta)) @ values)
    coefficients[0] /= 2.0
    # the grid theta_i = pi i / (G - 1): p_K(cos theta) = sum_k c_k cos(k theta) there is a
    # DCT-I of the coefficients, one real FFT of the even extension
    angles = torch.linspace(0.0, math.pi, _GRID_POINTS, dtype=torch.float64)
    exact = spectral_filter(lambda_max * (torch.cos(angles) + 1.0) / 2.0, where=where)
    approximation = torch.fft.rfft(coefficients, n=2 * (_GRID_POINTS - 1)).real[:_GRID_POINTS]
    spacing = math.pi / (_GRID_POINTS - 1)
    # Bernstein: |d^2/dtheta^2 p_K(cos theta)| <= K^2 max|p_K| <= K^2 sum_k |c_k|
    margin = spacing**2 / 8.0 * order**2 * float(coefficients.abs().sum())
    lift = max(0.0, margin - float(approximation.min()))
    coefficients[0] += lift
    max_error = float((exact - approximation - lift).abs().max())
    return ChebyshevFit(coefficients, lambda_max, max_error, lift)


def _chebyshev_terms(matrix: Tensor, columns: Tensor, scale: float, order: int):
    r"""Yield :math:`T_k(\tilde{\mathbf{L}})\mathbf{X}` for :math:`k = 0..K`, with
    :math:`\tilde{\mathbf{L}} = s\mathbf{L} - \mathbf{I}` (:math:`s = 2/\lambda_{max}`) and
    node-major columns ``[N, M]``: K products with ``matrix`` (:math:`\mathbf{L}`)."""
    previous = columns
    yield previous
    current = torch.mm(matrix, columns).mul_(scale).sub_(columns)
    yield current
    for _ in range(2, order + 1):
        # T_{k+1} = 2 L~ T_k - T_{k-1}
        following = torch.mm(matrix, current).mul_(2.0 * scale).sub_(current, alpha=2.0)
        following.sub_(previous)
        yield following
        previous, current = current, following


class _FilteredFormWithProduct(torch.autograd.Function):
    r"""Samples of ``x`` -> :math:`q_m = \mathbf{x}_m^\top \mathbf{H} \mathbf{x}_m` for a
    symmetric :math:`\mathbf{H}` given as a product ``apply(columns) = H @ columns`` on
    node-major ``[N, M]`` columns (``x`` is ``[N, M]`` for ``node_dim=0``, ``[M, N]`` for
    ``node_dim=1``). The backward pass reuses the forward product:
    :math:`\partial q_m/\partial\mathbf{x}_m = 2\mathbf{H}\mathbf{x}_m`."""

    @staticmethod
    def forward(ctx, x: Tensor, apply: Callable[[Tensor], Tensor], node_dim: int) -> Tensor:
        columns = x if node_dim == 0 else x.t()
        product = apply(columns)
        ctx.node_dim = node_dim
        ctx.save_for_backward(product)
        return (columns * product).sum(dim=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (product,) = ctx.saved_tensors
        grad = product * (2.0 * grad_output)
        return (grad if ctx.node_dim == 0 else grad.t()), None, None


def _filter_with(response, method: str | None, order: int | None,
                 params: Mapping) -> SpectralFilter:
    """The filter of ``response`` with ``method``/``order``/``params`` given beside it."""
    if isinstance(response, SpectralFilter):
        given = [f"{key}={value!r}" for key, value in
                 (("method", method), ("order", order), *params.items()) if value is not None]
        if given:
            raise ValueError(f"response is a SpectralFilter, which carries its own method, "
                             f"order and parameters; got {', '.join(given)} beside it")
        return response
    if isinstance(response, tuple):
        as_spectral_filter(response)  # a malformed pair is refused here
        response, params = response[0], {**response[1], **params}
    return SpectralFilter(response, method="auto" if method is None else method,
                          order=DEFAULT_ORDER if order is None else order, **params)


class FilteredOperator:
    r"""A neuron graph's filtered Laplacian :math:`h(\mathbf{L})`, prepared once, that
    evaluates :math:`\mathbf{a}^\top h(\mathbf{L})\mathbf{a}` for a batch of activations.

    The filtered counterpart of :class:`LaplacianOperator`, with the same call: ``x`` of
    shape ``[B, N]`` or ``[B, N, *]`` (dimension 1 holds the neurons, every other index is
    a sample) gives the per-sample form, ``[B]`` or ``[B, *]``, in the dtype of ``x``
    (half precision in float32), on the operator's device (move it with :meth:`to`).
    Isolated nodes follow :func:`laplacian` (a zero row and column, so eigenvalue 0 for
    both normalizations): each contributes :math:`h(0)\,a_i^2`, which is 0 for every preset.

    How (``method`` of the :class:`SpectralFilter`, resolved here; attribute ``method``):

    * ``"exact"``: :math:`h(\mathbf{L}) = \mathbf{U}\operatorname{diag}(h(\lambda))
      \mathbf{U}^\top` from a float64 ``eigh`` of the dense :math:`\mathbf{L}`, kept as a
      dense matrix; a call costs :math:`N^2` multiply-adds per sample. ``max_error`` is 0.
      The preset ``"laplacian"`` is computed by a :class:`LaplacianOperator` (no
      eigendecomposition, the same numbers as :func:`quadratic_form`).
    * ``"chebyshev"``: :math:`p_K(\mathbf{L})\mathbf{a} = \sum_k c_k
      T_k(\tilde{\mathbf{L}})\mathbf{a}` with :math:`\tilde{\mathbf{L}} =
      2\mathbf{L}/\lambda_{max} - \mathbf{I}` (``ChebConv``'s scaling) and
      :math:`\lambda_{max}` = :func:`lambda_max_bound`: K sparse products per call, no
      eigendecomposition; ``fit`` is the :class:`ChebyshevFit`, and
      :math:`|\mathbf{a}^\top h(\mathbf{L})\mathbf{a} - \mathbf{a}^\top p_K(\mathbf{L})
      \mathbf{a}| \le` ``max_error`` :math:`\cdot\lVert\mathbf{a}\rVert^2`.
    * ``"auto"``: exact up to :data:`EXACT_MAX_NODES` (1,024) nodes, Chebyshev above.

    Both use a custom autograd function whose backward reuses the forward product
    (:math:`\nabla_{\mathbf{a}} = 2 h(\mathbf{L})\mathbf{a}` times the incoming gradient):
    exact first derivatives, no double backward, no gradient to the graph.

    Args:
        data (Data): the neuron graph.
        response: a :class:`SpectralFilter`, a preset name, a callable on eigenvalues or a
            pair ``(name, {parameter: value})``. (default: ``"laplacian"``)
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        method (str, optional): ``"auto"``, ``"exact"`` or ``"chebyshev"``.
            (default: ``"auto"``, or the filter's own)
        order (int, optional): the Chebyshev order K. (default: ``20``, or the filter's)
        **params: the preset's parameters (not with a :class:`SpectralFilter`).

    Example:
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> op = FilteredOperator(path, "power", p=2.0)      # a^T L^2 a = |L a|^2
        >>> round(float(op(torch.tensor([[0., 1., 3.]], dtype=torch.float64))[0]), 9)
        6.0
        >>> cheb = FilteredOperator(path, "power", p=2.0, method="chebyshev", order=2)
        >>> cheb.lambda_max, cheb.max_error < 1e-9
        (3.0, True)
    """

    def __init__(self, data, response=None, normalization: str | None = None,
                 method: str | None = None, order: int | None = None, **params: float):
        check_normalization(normalization)
        self.filter = _filter_with("laplacian" if response is None else response, method,
                                   order, params)
        self._laplacian = LaplacianOperator(data, normalization)
        self.num_nodes = self._laplacian.num_nodes
        self.normalization = normalization
        self.lambda_max = lambda_max_bound(data, normalization)
        method = self.filter.method
        if method == "auto":
            method = "exact" if self.num_nodes <= EXACT_MAX_NODES else "chebyshev"
        self.method = method
        self.fit: ChebyshevFit | None = None
        self._response_matrix: Tensor | None = None
        self._cache: dict[torch.dtype, Tensor] = {}
        if method == "chebyshev":
            # a graph without edges has the spectrum {0}: any interval holding 0 serves
            self.fit = chebyshev_fit(self.filter, self.lambda_max or 1.0, self.filter.order)
            self._coefficients = self.fit.coefficients.tolist()
        elif not self.filter.is_laplacian:
            self._response_matrix = self._exact_matrix()

    @property
    def device(self) -> torch.device:
        return self._laplacian.device

    @property
    def order(self) -> int | None:
        """K of the Chebyshev polynomial (None for ``"exact"``)."""
        return None if self.fit is None else self.fit.order

    @property
    def max_error(self) -> float:
        r""":math:`\max |h - p_K|` on :math:`[0, \lambda_{max}]` (:class:`ChebyshevFit`);
        0.0 for ``"exact"``."""
        return 0.0 if self.fit is None else self.fit.max_error

    def _exact_matrix(self) -> Tensor:
        index, value = self._laplacian._entries
        n = self.num_nodes
        dense = torch.sparse_coo_tensor(index.cpu(), value.cpu().double(), (n, n),
                                        check_invariants=False).to_dense()
        eigenvalues, vectors = torch.linalg.eigh(dense)
        response = self.filter(eigenvalues, where="the spectrum of L")
        matrix = (vectors * response) @ vectors.T
        matrix = (matrix + matrix.T) / 2  # exactly symmetric: the backward uses 2 H a
        return matrix.to(device=self.device, dtype=work_dtype(self.device))

    def to(self, device: torch.device | str) -> FilteredOperator:
        """Move the operator to ``device`` (in place; returns ``self``)."""
        device = torch.device(device)
        if device == self.device:
            return self
        self._laplacian.to(device)
        if self._response_matrix is not None:
            self._response_matrix = self._response_matrix.to(device=device,
                                                             dtype=work_dtype(device))
        self._cache = {}
        return self

    def __repr__(self) -> str:
        fit = (f", order={self.order}, lambda_max={self.lambda_max:.6g}, "
               f"max_error={self.max_error:.3g}") if self.fit is not None else ""
        return (f"{self.__class__.__name__}(num_nodes={self.num_nodes}, {self.filter!r}, "
                f"normalization={self.normalization!r}, method={self.method!r}{fit}, "
                f"device={self.device})")

    # ----------------------------------------------------------------------------------
    def _matrix(self, dtype: torch.dtype) -> Tensor:
        matrix = self._cache.get(dtype)
        if matrix is None:
            if self._response_matrix is not None:
                matrix = self._response_matrix.to(dtype)
            else:  # L for the Chebyshev products: sparse CSR where supported
                kind = "sparse" if self.device.type in ("cpu", "cuda") else "dense"
                matrix = self._laplacian._matrix(kind, dtype)
            self._cache[dtype] = matrix
        return matrix

    def _chebyshev_product(self, columns: Tensor) -> Tensor:
        r""":math:`p_K(\mathbf{L})` times node-major ``columns`` ``[N, M]``."""
        matrix = self._matrix(columns.dtype)
        scale = 2.0 / (self.lambda_max or 1.0)
        num_nodes, num_samples = columns.shape
        out = columns.new_empty(num_nodes, num_samples)
        block = _sample_block(num_samples, num_nodes, columns)
        for start in range(0, num_samples, block):  # cache-sized blocks on the CPU
            chunk = columns[:, start:start + block].contiguous()
            terms = _chebyshev_terms(matrix, chunk, scale, self.fit.order)
            total = next(terms) * self._coefficients[0]
            for coefficient, term in zip(self._coefficients[1:], terms):
                total.add_(term, alpha=coefficient)
            out[:, start:start + block] = total
        return out

    def __call__(self, x: Tensor) -> Tensor:
        r"""Per-sample :math:`\mathbf{a}^\top h(\mathbf{L})\mathbf{a}` of ``x``
        ``[B, N, *]`` -> ``[B, *]``."""
        _check_activations(x, self.num_nodes)
        _check_same_device(x, self)
        if self.fit is None and self._response_matrix is None:
            return self._laplacian(x)  # the preset "laplacian": today's penalty, exactly
        samples, node_dim, out_shape = _batch_layout(x, self.num_nodes)
        with _without_autocast(x.device):
            if self.fit is None:
                values = _QuadraticFormWithProduct.apply(samples, self._matrix(samples.dtype),
                                                         node_dim)
            else:
                values = _FilteredFormWithProduct.apply(samples, self._chebyshev_product,
                                                        node_dim)
        return values if out_shape is None else values.reshape(out_shape)


def filtered_quadratic_form(x: Tensor, data, response, normalization: str | None = None,
                            method: str | None = None, order: int | None = None,
                            **params: float) -> Tensor:
    r"""Per-sample filtered form :math:`\mathbf{a}_b^\top h(\mathbf{L})\,\mathbf{a}_b =
    \sum_k h(\lambda_k)\,|\mathbf{u}_k^\top\mathbf{a}_b|^2`.

    ``x`` is ``[B, N]`` or ``[B, N, *]`` as for :func:`quadratic_form`; the result drops
    dimension 1 and has the dtype of ``x`` (float64 in, float64 out). ``response`` is a
    preset (``"laplacian"``, ``"power"`` with ``p``, ``"heat"`` with ``t``,
    ``"high_pass"`` with ``cutoff`` and ``sharpness``), a callable on a tensor of
    eigenvalues returning :math:`h(\lambda) \ge 0`, a pair ``(name, {parameter: value})``
    or a :class:`SpectralFilter`; see :class:`SpectralFilter` for the formulas and
    :class:`FilteredOperator` for the methods. ``"laplacian"`` gives exactly
    :func:`quadratic_form`.

    This builds a :class:`FilteredOperator` each call (an eigendecomposition or a
    Chebyshev fit); in a training loop build the operator once and call it.

    Args:
        x (Tensor): activations, floating point.
        data (Data): the neuron graph.
        response: the response :math:`h`.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        method (str, optional): ``"auto"``, ``"exact"`` or ``"chebyshev"``.
            (default: ``"auto"``)
        order (int, optional): the Chebyshev order K. (default: ``20``)
        **params: the preset's parameters.

    Example:
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> x = torch.tensor([[0., 1., 3.]], dtype=torch.float64)
        >>> filtered_quadratic_form(x, path, "laplacian")
        tensor([5.], dtype=torch.float64)
        >>> filtered_quadratic_form(x, path, "heat", t=1.0)
        tensor([3.0029], dtype=torch.float64)
    """
    check_tensor(x, "x", min_ndim=2, floating=True)
    operator = FilteredOperator(data, response, normalization, method, order, **params)
    return operator.to(x.device)(x)


def chebyshev_moments(x: Tensor, data, normalization: str | None = None,
                      order: int = DEFAULT_ORDER, lambda_max: float | None = None) -> Tensor:
    r"""Chebyshev moments :math:`m_k = \mathbf{a}^\top T_k(\tilde{\mathbf{L}})\,\mathbf{a}`,
    :math:`k = 0..K`, of every sample, with :math:`\tilde{\mathbf{L}} =
    2\mathbf{L}/\lambda_{max} - \mathbf{I}`: K sparse products, no eigendecomposition.

    Any polynomial form follows from them: for a :class:`ChebyshevFit` with the same
    :math:`\lambda_{max}`, :math:`\mathbf{a}^\top p_K(\mathbf{L})\mathbf{a} = \sum_k c_k m_k`,
    so one set of moments serves a whole filter bank (the read-outs of
    :mod:`gsr_pyg.metrics`). :math:`m_0 = \lVert\mathbf{a}\rVert^2`. A read-out: computed
    without gradient.

    Args:
        x (Tensor): ``[B, N]`` or ``[B, N, *]`` activations (dimension 1 the nodes).
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        order (int): K. (default: ``20``)
        lambda_max (float, optional): the scale of :math:`\tilde{\mathbf{L}}`, at least
            :func:`lambda_max_bound` (so that the spectrum lies in
            :math:`[0, \lambda_{max}]`). (default: :func:`lambda_max_bound`, 1.0 for a
            graph without edges)

    Returns:
        ``[B, K+1]`` (or ``[B, *, K+1]``), in the dtype of ``x`` (float32 for half).

    Example:
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> chebyshev_moments(torch.tensor([[0., 1., 3.]]), path, order=2)   # lambda_max 3
        tensor([[10.0000, -6.6667,  2.0000]])
    """
    check_tensor(x, "x", min_ndim=2, floating=True)
    check_int(order, "order", minimum=1, maximum=MAX_ORDER)
    bound = lambda_max_bound(data, normalization)
    if lambda_max is None:
        lambda_max = bound or 1.0
    elif check_positive(lambda_max, "lambda_max") < bound:
        raise ValueError(f"lambda_max must be at least the bound {bound:.6g} of the graph's "
                         f"largest eigenvalue (lambda_max_bound), got {lambda_max}")
    operator = LaplacianOperator(data, normalization).to(x.device)
    _check_activations(x, operator.num_nodes)
    samples, node_dim, out_shape = _batch_layout(x, operator.num_nodes)
    columns = samples if node_dim == 0 else samples.t()
    kind = "sparse" if x.device.type in ("cpu", "cuda") else "dense"
    with torch.no_grad(), _without_autocast(x.device):
        matrix = operator._matrix(kind, columns.dtype)
        chunk = columns.detach().contiguous()
        moments = [(chunk * term).sum(dim=0) for term in
                   _chebyshev_terms(matrix, chunk, 2.0 / float(lambda_max), order)]
    moments = torch.stack(moments, dim=-1)
    return moments if out_shape is None else moments.reshape(*out_shape, order + 1)
