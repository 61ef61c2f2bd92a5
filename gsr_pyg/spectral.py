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
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch_geometric.data import Data

from gsr_pyg._validation import check_choice, check_int, check_tensor, describe
from gsr_pyg.graphs import check_graph, edge_weights

__all__ = [
    "LaplacianOperator",
    "check_normalization",
    "connected_components",
    "eigenbasis",
    "graph_tensors",
    "laplacian",
    "quadratic_form",
    "work_dtype",
]

NORMALIZATIONS = (None, "sym")
METHODS = ("auto", "dense", "edge", "sparse")

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

# Sparse products of a [B, N] batch on the CPU go through the samples in blocks whose
# node-major copy takes about this many bytes: the rows of that copy, which the sparse matrix
# gathers in random order, then stay in the core's cache.
_SPARSE_BLOCK_BYTES = 2**20
_SPARSE_MIN_BLOCK = 32


def _sample_block(num_samples: int, num_nodes: int, x: Tensor) -> int:
    if x.device.type != "cpu":
        return num_samples
    block = max(_SPARSE_MIN_BLOCK, _SPARSE_BLOCK_BYTES // (num_nodes * x.element_size()))
    return min(block, num_samples)


class _QuadraticFormWithProduct(torch.autograd.Function):
    r"""Samples of ``x`` -> :math:`q_m = \mathbf{x}_m^\top \mathbf{L} \mathbf{x}_m` for a
    symmetric ``L`` (dense, or sparse CSR).

    ``x`` is ``[N, M]`` (``node_dim=0``: one column per sample) or ``[M, N]``
    (``node_dim=1``: one row per sample, a layer's own ``[B, N]`` output, used as is).

    The backward pass reuses the product :math:`\mathbf{L}\mathbf{x}_m` of the forward pass:
    :math:`\partial q_m / \partial \mathbf{x}_m = 2 \mathbf{L} \mathbf{x}_m`, so a training
    step costs one product. A sparse product of ``[M, N]`` rows runs on node-major blocks of
    samples (:func:`_sample_block`); the products stay node-major until the backward pass
    writes the gradient, transposed, in one pass.
    """

    @staticmethod
    def forward(ctx, x: Tensor, matrix: Tensor, node_dim: int) -> Tensor:
        ctx.node_dim = node_dim
        ctx.blocked = node_dim == 1 and matrix.layout == torch.sparse_csr
        if not ctx.blocked:
            # (L x_m)^T = x_m^T L for symmetric L: a [M, N] batch needs no transpose
            product = matrix @ x if node_dim == 0 else x @ matrix
            ctx.save_for_backward(product)
            return (x * product).sum(dim=node_dim)
        num_samples, num_nodes = x.shape
        block = _sample_block(num_samples, num_nodes, x)
        products = x.new_empty(num_samples * num_nodes)  # node-major block after block
        values = x.new_empty(num_samples)
        for start in range(0, num_samples, block):  # a few blocks, not a loop per sample
            columns = x[start:start + block].t().contiguous()
            width = columns.shape[1]
            product = products[start * num_nodes:(start + width) * num_nodes].view(
                num_nodes, width)
            if x.device.type == "cpu":
                torch.mm(matrix, columns, out=product)
            else:  # one block; sparse `out=` support varies by backend
                product.copy_(matrix @ columns)
            values[start:start + width] = (columns * product).sum(dim=0)
        ctx.block = block
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
        for start in range(0, num_samples, ctx.block):
            stop = min(start + ctx.block, num_samples)
            block = product[start * num_nodes:stop * num_nodes].view(num_nodes, stop - start)
            # the multiply writes straight into the transposed rows of the gradient
            torch.mul(block, scale[start:stop], out=grad[start:stop].t())
        return grad, None, None


def _check_activations(x, num_nodes: int, name: str = "x") -> Tensor:
    check_tensor(x, name, min_ndim=2, floating=True)
    if x.size(1) != num_nodes:
        raise ValueError(
            f"{name} has {x.size(1)} features in dimension 1 but the graph has "
            f"{num_nodes} nodes"
        )
    return x


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
    * ``"sparse"``: :math:`\mathbf{L}\mathbf{X}` with a sparse CSR matrix;
    * ``"edge"``: :math:`\sum_{i<j} w_{ij}(a_i - a_j)^2` by ``index_select`` on the edges;
    * ``"auto"``: picked from the size of the graph, the number of samples and the device
      (see :meth:`resolve_method`).

    ``"dense"`` and ``"sparse"`` use a custom autograd function whose backward reuses the
    forward product (:math:`\nabla_{\mathbf{a}} = 2\mathbf{L}\mathbf{a}` times the incoming
    gradient), so a training step costs one product; it is differentiable once (not for
    double backward) and treats the graph as a constant (no gradient to edge weights).
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

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> op = LaplacianOperator(data)          # once, when the graph is installed
        >>> op(torch.tensor([[0., 1., 3.], [1., 1., 1.]]))   # every step: a_b^T L a_b
        tensor([5., 0.])
    """

    def __init__(self, data, normalization: str | None = None, method: str = "auto"):
        check_normalization(normalization)
        self.method = method
        num_nodes, edge_index, edge_weight = graph_tensors(data)
        self.num_nodes = num_nodes
        self.normalization = normalization
        upper = edge_index[0] < edge_index[1]
        self._source = edge_index[0, upper].contiguous()
        self._target = edge_index[1, upper].contiguous()
        self._weight = edge_weight[upper].contiguous()
        self._inv_sqrt_degree: Tensor | None = None
        if normalization == "sym":
            degree = edge_weight.new_zeros(num_nodes).index_add_(0, edge_index[0], edge_weight)
            inv_sqrt = degree.pow(-0.5)
            self._inv_sqrt_degree = inv_sqrt.masked_fill(degree == 0, 0.0)
        self._entries = _laplacian_entries(num_nodes, edge_index, edge_weight, normalization)
        self._cache: dict[tuple[str, torch.dtype], Tensor] = {}

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
    def device(self) -> torch.device:
        return self._source.device

    @property
    def num_edges(self) -> int:
        """Number of undirected edges (each counted once)."""
        return int(self._source.numel())

    def to(self, device: torch.device | str) -> LaplacianOperator:
        """Move the operator to ``device`` (in place; returns ``self``)."""
        device = torch.device(device)
        if device == self.device:
            return self
        work = work_dtype(device)
        self._source = self._source.to(device)
        self._target = self._target.to(device)
        self._weight = self._weight.to(device=device, dtype=work)
        if self._inv_sqrt_degree is not None:
            self._inv_sqrt_degree = self._inv_sqrt_degree.to(device=device, dtype=work)
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
            coo = torch.sparse_coo_tensor(
                index, value.to(dtype), (self.num_nodes, self.num_nodes), check_invariants=False
            ).coalesce()
            if kind == "dense":
                matrix = coo.to_dense()
            else:
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

    def _cast(self, name: str, dtype: torch.dtype) -> Tensor:
        key = (name, dtype)
        value = self._cache.get(key)
        if value is None:
            value = getattr(self, name).to(dtype)
            self._cache[key] = value
        return value

    def _edge_form(self, columns: Tensor) -> Tensor:
        dtype = columns.dtype
        if self._inv_sqrt_degree is not None:
            columns = columns * self._cast("_inv_sqrt_degree", dtype).unsqueeze(1)
        difference = columns.index_select(0, self._source) - columns.index_select(0, self._target)
        return self._cast("_weight", dtype) @ difference.square()

    def __call__(self, x: Tensor, method: str | None = None) -> Tensor:
        """Per-sample :math:`\\mathbf{a}^\\top \\mathbf{L} \\mathbf{a}` of ``x``
        ``[B, N, *]`` -> ``[B, *]``."""
        _check_activations(x, self.num_nodes)
        if x.device != self.device:
            raise ValueError(
                f"x is on {x.device} but the LaplacianOperator is on {self.device}; "
                f"move it once with op.to({str(x.device)!r})"
            )
        method = self.method if method is None else method
        if method != self.method:
            check_choice(method, "method", METHODS)
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()
        if x.dim() == 2:
            # [B, N] is used as is: one row per sample (no transposed copy of the layer)
            samples, node_dim, out_shape = x, 1, None
        else:
            # node-major [N, M]: every column is one sample or one spatial position
            out_shape = (x.size(0),) + tuple(x.shape[2:])
            samples, node_dim = x.transpose(0, 1).reshape(self.num_nodes, -1), 0
        if method == "auto":
            method = self.resolve_method(samples.numel() // self.num_nodes, x.device)
        # Under autocast the product would run in half precision: keep float32/float64.
        device_type = x.device.type
        no_autocast = (torch.autocast(device_type=device_type, enabled=False)
                       if device_type in ("cpu", "cuda", "mps", "xpu") else nullcontext())
        with no_autocast:
            if method == "edge":
                columns = samples if node_dim == 0 else samples.t()
                values = self._edge_form(columns)
            else:
                values = _QuadraticFormWithProduct.apply(
                    samples, self._matrix(method, samples.dtype), node_dim
                )
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

def connected_components(data) -> tuple[int, Tensor]:
    r"""Connected components of a neuron graph, without an eigendecomposition.

    The number of components equals the multiplicity of the eigenvalue 0 of
    :math:`\mathbf{L}`. Computed with :func:`scipy.sparse.csgraph.connected_components`
    on the CPU (this is not a training hot path). Only the structure is read: weights are
    ignored (every edge in the data model has a weight > 0).

    Returns:
        ``(num_components, labels)`` with ``labels`` a ``[N]`` long tensor on the device
        of ``data.edge_index``, numbered ``0..C-1`` in order of first appearance (node 0
        is in component 0).

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), num_nodes=5)
        >>> connected_components(data)
        (3, tensor([0, 0, 1, 1, 2]))
    """
    import numpy as np
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components as scipy_components

    check_graph(data, name="data")
    num_nodes = check_int(int(data.num_nodes), "data.num_nodes", minimum=1)
    edge_index = data.edge_index
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
    # Renumber in order of first appearance.
    _, first = np.unique(raw, return_index=True)
    order = np.empty(num, dtype=np.int64)
    order[np.argsort(first)] = np.arange(num)
    labels = torch.from_numpy(order[raw]).to(edge_index.device)
    return int(num), labels


def eigenbasis(data, normalization: str | None = None,
               k: int | None = None) -> tuple[Tensor, Tensor]:
    r"""Eigenvalues (ascending) and eigenvectors of the graph Laplacian.

    :math:`\mathbf{L}\mathbf{u}_i = \lambda_i \mathbf{u}_i`,
    :math:`0 = \lambda_1 \le \dots \le \lambda_N`, from a dense symmetric
    eigendecomposition (:func:`torch.linalg.eigh`, computed in float64): for plots and
    metrics, not for training.

    Args:
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        k (int, optional): keep the ``k`` smallest. (default: all ``N``)

    Returns:
        ``(eigenvalues [k], eigenvectors [N, k])`` (column ``i`` belongs to eigenvalue
        ``i``), on the graph's device, in the dtype of ``data.edge_weight``.

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
    index, value = _laplacian_entries(num_nodes, edge_index, edge_weight, normalization)
    matrix = torch.sparse_coo_tensor(
        index, value, (num_nodes, num_nodes), check_invariants=False
    ).to_dense()
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    if k is not None:
        eigenvalues, eigenvectors = eigenvalues[:k], eigenvectors[:, :k]
    return eigenvalues.to(out_dtype), eigenvectors.to(out_dtype)
