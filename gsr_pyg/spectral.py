r"""Graph Laplacians of neuron graphs and the Laplacian quadratic form.

A layer's neurons are the nodes of a graph given as a :class:`torch_geometric.data.Data`
(``num_nodes``, ``edge_index`` with both directions of every undirected edge and
``edge_weight`` > 0, symmetric). For activations :math:`\mathbf{a} \in \mathbb{R}^N` the
penalty of graph spectral regularization is the Laplacian quadratic form

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
from torch_geometric.utils import coalesce, get_laplacian, remove_self_loops, scatter

from gsr_pyg._validation import check_choice, check_int, check_tensor, describe

__all__ = [
    "LaplacianOperator",
    "connected_components",
    "eigenbasis",
    "laplacian",
    "quadratic_form",
]

NORMALIZATIONS = (None, "sym")
METHODS = ("auto", "dense", "edge", "sparse")

# Relative tolerance when checking that edge weights are symmetric: weights computed per
# direction (e.g. from torch.cdist) may differ in the last bits; they are averaged.
_SYMMETRY_RTOL = 1e-5


# --------------------------------------------------------------------------------------
# validation of a graph (once, at the public boundary)
# --------------------------------------------------------------------------------------

def _check_normalization(normalization) -> None:
    if normalization == "rw":
        raise ValueError(
            "normalization='rw' is not supported: the random-walk Laplacian "
            "I - D^-1 W is not symmetric and its quadratic form is indefinite, so it cannot "
            "be a penalty; use normalization=None (L = D - W) or 'sym' "
            "(L = I - D^-1/2 W D^-1/2)"
        )
    check_choice(normalization, "normalization", NORMALIZATIONS)


def _work_dtype(device: torch.device) -> torch.dtype:
    # Graph structures are derived in float64 (exact degrees) and cast per use;
    # MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def _graph_tensors(data, name: str = "data") -> tuple[int, Tensor, Tensor]:
    """Validate a neuron graph; return ``(N, edge_index, edge_weight)``.

    The returned edge list has no self-loops, is coalesced and its weights are exactly
    symmetric (averaged over the two directions) in the float64 work dtype.
    """
    edge_index = getattr(data, "edge_index", None)
    if edge_index is None:
        raise TypeError(
            f"{name} must be a torch_geometric.data.Data with an edge_index, got {describe(data)}"
        )
    num_nodes = data.num_nodes
    if num_nodes is None:
        raise ValueError(f"{name}.num_nodes must be set, got None")
    num_nodes = check_int(int(num_nodes), f"{name}.num_nodes", minimum=1)
    check_tensor(edge_index, f"{name}.edge_index", ndim=2)
    if edge_index.size(0) != 2 or edge_index.dtype != torch.long:
        raise ValueError(
            f"{name}.edge_index must be a [2, E] long tensor, got {describe(edge_index)}"
        )
    if edge_index.numel() and (
        int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes
    ):
        raise ValueError(
            f"{name}.edge_index must hold node ids in [0, {num_nodes - 1}] for "
            f"{num_nodes} nodes, got ids from {int(edge_index.min())} to "
            f"{int(edge_index.max())}"
        )
    device = edge_index.device
    work = _work_dtype(device)
    edge_weight = getattr(data, "edge_weight", None)
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.size(1), dtype=work, device=device)
    else:
        check_tensor(edge_weight, f"{name}.edge_weight", ndim=1, floating=True)
        if edge_weight.numel() != edge_index.size(1):
            raise ValueError(
                f"{name}.edge_weight must have one entry per edge ({edge_index.size(1)}), "
                f"got {describe(edge_weight)}"
            )
        if edge_weight.numel() and not bool(
            (torch.isfinite(edge_weight) & (edge_weight > 0)).all()
        ):
            bad = int((~(torch.isfinite(edge_weight) & (edge_weight > 0))).sum())
            raise ValueError(
                f"{name}.edge_weight must be finite and > 0, got {bad} entries that are not"
            )
        edge_weight = edge_weight.to(device=device, dtype=work)

    edge_index, edge_weight = remove_self_loops(edge_index, edge_weight)
    edge_index, edge_weight = coalesce(edge_index, edge_weight, num_nodes)
    reverse_index, reverse_weight = coalesce(edge_index.flip(0), edge_weight, num_nodes)
    if not torch.equal(edge_index, reverse_index):
        raise ValueError(
            f"{name}.edge_index must list both directions of every undirected edge "
            "(see torch_geometric.utils.to_undirected), got a directed edge list"
        )
    if not torch.allclose(edge_weight, reverse_weight, rtol=_SYMMETRY_RTOL, atol=0.0):
        worst = float((edge_weight - reverse_weight).abs().max())
        raise ValueError(
            f"{name}.edge_weight must be symmetric (w_ij == w_ji), got differences up to "
            f"{worst:.3g} (see torch_geometric.utils.to_undirected(reduce='mean'))"
        )
    edge_weight = 0.5 * (edge_weight + reverse_weight)
    return num_nodes, edge_index, edge_weight


def _laplacian_entries(num_nodes: int, edge_index: Tensor, edge_weight: Tensor,
                       normalization: str | None) -> tuple[Tensor, Tensor]:
    """COO entries of L (validated, symmetric input); isolated nodes get no entry."""
    index, value = get_laplacian(edge_index, edge_weight, normalization, num_nodes=num_nodes)
    if normalization == "sym":
        # PyG puts 1 on the diagonal of isolated nodes; the convention here (and in
        # networkx) is an all-zero row, which keeps a^T L a equal to the edge form.
        degree = scatter(edge_weight, edge_index[0], 0, dim_size=num_nodes, reduce="sum")
        isolated_diagonal = (index[0] == index[1]) & (degree[index[0]] == 0)
        index, value = index[:, ~isolated_diagonal], value[~isolated_diagonal]
    return index, value


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
    :func:`torch_geometric.utils.get_laplacian` puts a 1 on that diagonal). Self-loops are
    ignored. ``"rw"`` is refused: the random-walk Laplacian is not symmetric and its
    quadratic form is indefinite, so it cannot serve as a penalty.

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
    _check_normalization(normalization)
    num_nodes, edge_index, edge_weight = _graph_tensors(data)
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

class _QuadraticFormWithProduct(torch.autograd.Function):
    r"""Columns of ``X`` [N, M] -> :math:`q_m = x_m^\top L x_m` for a symmetric ``L``.

    The backward pass reuses the product :math:`L X` of the forward pass:
    :math:`\partial q_m / \partial x_m = 2 L x_m`, so a training step costs one product.
    """

    @staticmethod
    def forward(ctx, columns: Tensor, matrix: Tensor) -> Tensor:
        product = matrix @ columns
        ctx.save_for_backward(product)
        return (columns * product).sum(dim=0)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        (product,) = ctx.saved_tensors
        return 2.0 * product * grad_output.unsqueeze(0), None


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
        >>> op = LaplacianOperator(data)          # once, when the graph is installed
        >>> penalty = op(activations).mean()      # every step: mean_b a_b^T L a_b
        >>> op = op.to("cuda")
    """

    def __init__(self, data, normalization: str | None = None, method: str = "auto"):
        _check_normalization(normalization)
        self.method = method
        num_nodes, edge_index, edge_weight = _graph_tensors(data)
        self.num_nodes = num_nodes
        self.normalization = normalization
        upper = edge_index[0] < edge_index[1]
        self._source = edge_index[0, upper].contiguous()
        self._target = edge_index[1, upper].contiguous()
        self._weight = edge_weight[upper].contiguous()
        self._inv_sqrt_degree: Tensor | None = None
        if normalization == "sym":
            degree = scatter(edge_weight, edge_index[0], 0, dim_size=num_nodes, reduce="sum")
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
        work = _work_dtype(device)
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
    def resolve_method(self, num_samples: int, device: torch.device | str | None = None) -> str:
        """The method ``"auto"`` uses for ``num_samples`` columns (samples times spatial
        positions) on ``device`` (default: the operator's).

        On the CPU the sparse CSR product is never much slower than the dense one and far
        faster from a few hundred nodes on; the edge form is never the fastest, because its
        backward scatters into the input. The dense matmul only wins on tiny graphs.
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
        # Forward+backward of op(x).mean() in float32 on a 2-core CPU, kNN-like graphs of
        # mean degree ~12, best of many runs, ms as dense / sparse / edge:
        #   N      x = [64, N]            x = [500, N]           x = [64, N, 8, 8]
        #   32     0.26 / 0.27 / 0.36     0.33 / 0.36 / 0.66     1.21 / 1.21 / 27.9
        #   64     0.29 / 0.29 / 0.43     0.40 / 0.44 / 1.03     1.61 / 1.35 / 5.85
        #   128    0.29 / 0.30 / 0.48     0.60 / 0.56 / 1.62     3.57 / 1.95 / 20.2
        #   256    0.62 / 0.55 / 1.17     1.84 / 1.14 / 12.7     24.9 / 14.0 / 225
        #   1024   10.9 / 0.90 / 12.3     39.3 / 14.8 / 108      -
        #   4096   100  / 10.3 / 50.6     682  / 106  / 1333     -
        return "dense" if n <= 64 and num_samples <= 1024 else "sparse"

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
        out_shape = (x.size(0),) + tuple(x.shape[2:])
        # Node-major layout [N, M]: every column is one sample (or one spatial position).
        columns = x.transpose(0, 1).reshape(self.num_nodes, -1)
        if columns.dtype not in (torch.float32, torch.float64):
            columns = columns.float()
        if method == "auto":
            method = self.resolve_method(columns.size(1), x.device)
        # Under autocast the product would run in half precision: keep float32/float64.
        device_type = columns.device.type
        no_autocast = (torch.autocast(device_type=device_type, enabled=False)
                       if device_type in ("cpu", "cuda", "mps", "xpu") else nullcontext())
        with no_autocast:
            if method == "edge":
                values = self._edge_form(columns)
            else:
                values = _QuadraticFormWithProduct.apply(
                    columns, self._matrix(method, columns.dtype)
                )
        return values.reshape(out_shape)


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
    on the CPU (this is not a training hot path).

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

    num_nodes, edge_index, _ = _graph_tensors(data)
    rows, cols = edge_index.cpu().numpy()
    adjacency = sp.coo_matrix(
        (np.ones(rows.shape[0], dtype=np.int8), (rows, cols)), shape=(num_nodes, num_nodes)
    ).tocsr()
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
    _check_normalization(normalization)
    num_nodes, edge_index, edge_weight = _graph_tensors(data)
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
