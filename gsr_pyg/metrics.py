r"""How structured is a layer: smoothness of activations on a neuron graph, the graph's own
structure, and agreement between partitions.

Notation: :math:`\mathbf{a} \in \mathbb{R}^m` the activations of one sample over the
:math:`m = N` neurons (or a class-mean map), :math:`\mathbf{W}` the symmetric edge weights,
:math:`d_i = \sum_j W_{ij}`, :math:`\mathbf{L} = \mathbf{D} - \mathbf{W}`,
:math:`S_0 = \sum_{ij} W_{ij}` (both directions of every edge), :math:`\bar a` the mean
of :math:`\mathbf{a}`.

Activation metrics take ``x`` as the penalty reads a layer: ``[N]`` (one sample; a 0-dim
tensor comes back), ``[B, N]`` (``[B]`` comes back) or ``[B, N, *]``, e.g. a conv map
``[B, C, H, W]`` whose ``C`` channels are the nodes and whose every position is one more
sample (``[B, *]`` comes back), all on the device of ``x``
(:func:`gsr_pyg.capture.samples_by_neurons`); graph metrics return Python numbers.

They also take ``node_dim``, the axis that holds the neurons (default 1; ``-1`` for a
transformer layer ``[B, T, D]``), and a boolean ``mask`` over the sample axes (``x.shape``
without ``node_dim``, e.g. an ``attention_mask`` ``[B, T]``): padded positions are left out,
and a per-sample result then holds the real positions only, ``[S_real]`` in row-major order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from gsr_pyg._validation import check_bool, check_choice, check_int, check_tensor, describe
from gsr_pyg.capture import (
    check_node_dim,
    check_sample_mask,
    masked_samples,
    neuron_axis,
    sample_shape,
    samples_by_neurons,
)
from gsr_pyg.graphs import to_networkx
from gsr_pyg.spectral import (
    MAX_ORDER,
    SpectralFilter,
    chebyshev_fit,
    chebyshev_moments,
    check_normalization,
    connected_components,
    eigenbasis,
    graph_tensors,
    lambda_max_bound,
    quadratic_form,
    work_dtype,
)

__all__ = [
    "SpectralEnergy",
    "WaveletEnergy",
    "Clustering",
    "adjusted_rand_index",
    "average_linkage",
    "cluster_by_silhouette",
    "dirichlet_energy",
    "edge_jaccard",
    "feature_correlations",
    "feature_loadings",
    "feature_modules",
    "gearys_c",
    "graph_fourier_energy",
    "graph_wavelet_energy",
    "hammond_kernel",
    "modularity",
    "morans_i",
    "neuron_modules",
    "normalized_mutual_info",
    "num_components",
    "silhouette_score",
    "smoothness_ratio",
]

NEURON_MODULE_METHODS = ("components", "spectral", "louvain")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def _signal(x, num_nodes: int, name: str = "x", node_dim: int = 1,
            mask: Tensor | None = None) -> tuple[Tensor, tuple[int, ...]]:
    """Validate ``x`` [N], [B, N] or [B, N, *] (the nodes on axis ``node_dim``, every other
    axis a sample) and ``mask``; return it as [samples, N] (the real ones) and the shape of a
    per-sample result."""
    check_tensor(x, name, min_ndim=1, floating=True)
    if x.dim() == 1:
        check_node_dim(node_dim)
        if mask is not None:
            raise ValueError(f"mask needs {name} with sample axes, got one sample "
                             f"{describe(x)}")
        dim = 0
    else:
        dim = neuron_axis(x, node_dim, name)
    if x.size(dim) != num_nodes:
        raise ValueError(
            f"{name} has {x.size(dim)} features in dimension {dim} but the graph has "
            f"{num_nodes} nodes"
        )
    if x.dim() == 1:
        return x.unsqueeze(0), ()
    if mask is None:
        return samples_by_neurons(x, node_dim), tuple(sample_shape(x, node_dim))
    rows = masked_samples(x, node_dim, mask)
    return rows, (rows.size(0),)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _centred_on_graph(x, data, node_dim: int = 1, mask: Tensor | None = None
                      ) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...]]:
    """``x`` as [samples, N] with every sample centred over the nodes, the edges and weights
    on its device and in its compute dtype, and the shape of a per-sample result."""
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    x, out_shape = _signal(x, num_nodes, node_dim=node_dim, mask=mask)
    dtype = _compute_dtype(x)
    values = x.to(dtype)
    weight = edge_weight.to(device=x.device, dtype=dtype)
    return (values - values.mean(dim=1, keepdim=True), edge_index.to(x.device), weight,
            out_shape)


def _labels(labels, name: str, length: int | None = None, entry: str = "node") -> Tensor:
    """Integer labels as a 1-D long tensor (tensor, numpy array or sequence); ``length``
    entries, one per ``entry``, when given."""
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"{name} must be a 1-D tensor of integer labels, got {describe(labels)}"
            ) from error
    if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or \
            labels.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D tensor of integer labels, got {describe(labels)}")
    if length is not None and labels.numel() != length:
        raise ValueError(
            f"{name} must have {length} entries (one per {entry}), got {labels.numel()}"
        )
    return labels.long()


def _first_appearance(labels: Tensor) -> Tensor:
    """Renumber labels 0..C-1 in order of first appearance."""
    unique, inverse = torch.unique(labels, return_inverse=True)
    positions = torch.arange(labels.numel(), device=labels.device)
    first = torch.full((unique.numel(),), labels.numel(), dtype=torch.long, device=labels.device)
    first = first.scatter_reduce(0, inverse, positions, reduce="amin")
    rank = torch.empty_like(first)
    rank[first.argsort()] = torch.arange(unique.numel(), device=labels.device)
    return rank[inverse]


# --------------------------------------------------------------------------------------
# smoothness of activations on the graph
# --------------------------------------------------------------------------------------

def dirichlet_energy(x: Tensor, data, normalization: str | None = None, node_dim: int = 1,
                     mask: Tensor | None = None) -> Tensor:
    r"""Dirichlet energy :math:`E(\mathbf{a}) = \mathbf{a}^\top\mathbf{L}\mathbf{a}
    = \tfrac12 \sum_{ij} W_{ij}(a_i - a_j)^2` (GSR's own penalty; scale-dependent).

    With ``normalization="sym"``: :math:`\tfrac12\sum_{ij} W_{ij}(a_i/\sqrt{d_i} -
    a_j/\sqrt{d_j})^2`. A thin wrapper of :func:`gsr_pyg.spectral.quadratic_form` that
    also takes a single sample.

    Args:
        x (Tensor): ``[N]``, ``[B, N]`` or ``[B, N, *]`` activations.
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        node_dim (int): the axis of ``x`` that holds the nodes. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes; only its true
            positions are returned. (default: ``None``)

    Returns:
        0-dim tensor for ``[N]``, ``[S_real]`` with a mask, else ``x.shape`` without
        ``node_dim``.

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> dirichlet_energy(torch.tensor([0., 1., 3.]), data)
        tensor(5.)
    """
    check_tensor(x, "x", min_ndim=1, floating=True)
    if x.dim() == 1:
        _signal(x, graph_tensors(data)[0], mask=mask)
        return quadratic_form(x.unsqueeze(0), data, normalization)[0]
    if node_dim == 1 and mask is None:
        return quadratic_form(x, data, normalization)  # [B, N, *]: read on axis 1 as is
    rows, out_shape = _signal(x, graph_tensors(data)[0], node_dim=node_dim, mask=mask)
    return quadratic_form(rows, data, normalization).reshape(out_shape)


def smoothness_ratio(x: Tensor, data, num_permutations: int = 100, seed: int = 0,
                     normalization: str | None = None, node_dim: int = 1,
                     mask: Tensor | None = None) -> float:
    r"""Dirichlet energy relative to the same activations on shuffled neurons.

    .. math::
        \rho = \frac{\sum_b E(\mathbf{a}_b)}
                    {\frac1P \sum_{p=1}^{P} \sum_b E(\mathbf{a}_b \circ \pi_p)},

    where :math:`\pi_p` are random permutations of the neuron-to-node assignment (the same
    permutation for every row of ``x``; seeded). :math:`\rho \approx 1`: no structure;
    :math:`\rho \to 0`: activations are smooth on the graph. Scale-free, so comparable
    across runs, layers and graphs.

    All permutations are evaluated at once through the Gram matrix
    :math:`\mathbf{G} = \mathbf{X}^\top\mathbf{X}` of the activations (row-centred for
    the combinatorial Laplacian):
    :math:`\sum_b (x_{b,i} - x_{b,j})^2 = G_{ii} + G_{jj} - 2G_{ij}` (in float64).

    Args:
        x (Tensor): ``[N]``, ``[B, N]`` or ``[B, N, *]`` activations (e.g. class-mean maps);
            every row (every position of a conv map) is a sample.
        data (Data): the neuron graph.
        num_permutations (int): number of random permutations. (default: ``100``)
        seed (int): seed of the permutations. (default: ``0``)
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        node_dim (int): the axis of ``x`` that holds the nodes. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes; padded positions are
            left out of both energies. (default: ``None``)

    Returns:
        ``float``; ``nan`` if every row of ``x`` is constant.

    Example:
        >>> i = torch.arange(63)
        >>> path = Data(edge_index=torch.cat([torch.stack([i, i + 1]), torch.stack([i + 1, i])],
        ...                                  dim=1), num_nodes=64)
        >>> round(smoothness_ratio(torch.linspace(0, 1, 64).repeat(8, 1), path), 4)
        0.0015
    """
    check_normalization(normalization)
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    check_int(num_permutations, "num_permutations", minimum=1)
    check_int(seed, "seed")
    x, _ = _signal(x, num_nodes, node_dim=node_dim, mask=mask)
    device = x.device
    work = work_dtype(device)
    upper = edge_index[0] < edge_index[1]
    source, target = edge_index[0, upper].to(device), edge_index[1, upper].to(device)
    weight = edge_weight[upper].to(device=device, dtype=work)

    values = x.to(work)
    if normalization is None:
        # L 1 = 0: centring each row changes no energy and avoids cancellation in G.
        values = values - values.mean(dim=1, keepdim=True)
    gram = values.T @ values
    if normalization == "sym":
        degree = torch.zeros(num_nodes, dtype=work, device=device).index_add_(
            0, edge_index[0].to(device), edge_weight.to(device=device, dtype=work)
        )
        node_scale = degree.pow(-0.5).masked_fill(degree == 0, 0.0)
    else:
        node_scale = torch.ones(num_nodes, dtype=work, device=device)
    scale_source, scale_target = node_scale[source], node_scale[target]

    def energy(neuron_at_source: Tensor, neuron_at_target: Tensor) -> Tensor:
        # Node i of the graph shows neuron perm[i]; [..., E'] neuron ids -> [...] energies.
        terms = (
            scale_source.square() * gram[neuron_at_source, neuron_at_source]
            + scale_target.square() * gram[neuron_at_target, neuron_at_target]
            - 2 * scale_source * scale_target * gram[neuron_at_source, neuron_at_target]
        )
        return terms @ weight

    observed = energy(source, target)
    generator = torch.Generator().manual_seed(seed)
    permutations = torch.rand(num_permutations, num_nodes, generator=generator).argsort(dim=1)
    permutations = permutations.to(device)
    # Chunks of permutations keep the [P, E'] gathers within ~16M entries.
    chunk = max(1, (1 << 24) // max(1, source.numel()))
    shuffled = torch.cat([
        energy(block[:, source], block[:, target]) for block in permutations.split(chunk)
    ])
    baseline = shuffled.mean()
    if float(baseline) <= 0.0:
        return math.nan
    return float(observed / baseline)


def morans_i(x: Tensor, data, node_dim: int = 1, mask: Tensor | None = None) -> Tensor:
    r"""Moran's I, the spatial autocorrelation of activations on the graph.

    .. math::
        I = \frac{m}{S_0}\,
            \frac{\sum_{ij} W_{ij}(a_i - \bar a)(a_j - \bar a)}{\sum_i (a_i - \bar a)^2}

    Near 1 for smooth signals, :math:`-1/(m-1)` in expectation without structure, negative
    for signals that alternate between neighbours. ``nan`` for a constant row or a graph
    without edges.

    Args:
        x (Tensor): ``[N]``, ``[B, N]`` or ``[B, N, *]`` (a conv map: one value per
            position).
        data (Data): the neuron graph.
        node_dim (int): the axis of ``x`` that holds the nodes. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes; only its true
            positions are returned. (default: ``None``)

    Returns:
        0-dim tensor for ``[N]``, ``[S_real]`` with a mask, else ``x.shape`` without
        ``node_dim``, on the device of ``x``.

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> morans_i(torch.tensor([0., 1., 2.]), data)
        tensor(0.)
    """
    centred, edge_index, weight, out_shape = _centred_on_graph(x, data, node_dim, mask)
    cross = (centred[:, edge_index[0]] * centred[:, edge_index[1]]) @ weight
    total_weight = weight.sum()
    value = centred.size(1) / total_weight * cross / centred.square().sum(dim=1)
    return value.reshape(out_shape)


def gearys_c(x: Tensor, data, node_dim: int = 1, mask: Tensor | None = None) -> Tensor:
    r"""Geary's C, a variance-normalised Dirichlet energy.

    .. math::
        C = \frac{m - 1}{2 S_0}\,
            \frac{\sum_{ij} W_{ij}(a_i - a_j)^2}{\sum_i (a_i - \bar a)^2}
          = \frac{m - 1}{S_0}\,\frac{\mathbf{a}^\top\mathbf{L}\mathbf{a}}
            {\sum_i (a_i - \bar a)^2}

    :math:`C < 1`: positive autocorrelation (smooth), :math:`\approx 1`: none. ``nan`` for
    a constant row or a graph without edges. Arguments (``node_dim``, ``mask`` too) and
    result as :func:`morans_i`: one value per sample of ``x`` (``[N]``, ``[B, N]`` or
    ``[B, N, *]``).

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> gearys_c(torch.tensor([0., 1., 2.]), data)
        tensor(0.5000)
    """
    centred, edge_index, weight, out_shape = _centred_on_graph(x, data, node_dim, mask)
    # Both directions of every edge: the sum over ordered pairs ij.
    squared = (centred[:, edge_index[0]] - centred[:, edge_index[1]]).square() @ weight
    value = (centred.size(1) - 1) / (2 * weight.sum()) * squared / centred.square().sum(dim=1)
    return value.reshape(out_shape)


# --------------------------------------------------------------------------------------
# structure of a (learned) neuron graph
# --------------------------------------------------------------------------------------

def num_components(data) -> int:
    """Number of connected components of the graph (GSR's stop rule; the multiplicity of
    the eigenvalue 0 of its Laplacian).

    Example:
        >>> num_components(Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3))
        2
    """
    return connected_components(data)[0]


def _kmeans(points: Tensor, k: int, seed: int, n_init: int = 10,
            max_iter: int = 300) -> Tensor:
    """Seeded k-means (k-means++ starts, Lloyd iterations, best of ``n_init``) -> labels."""
    generator = torch.Generator().manual_seed(seed)
    n = points.size(0)
    best_labels, best_inertia = None, math.inf
    for _ in range(n_init):
        # k-means++: each new centre drawn with probability ~ squared distance.
        first = int(torch.randint(n, (1,), generator=generator))
        centres = points[first:first + 1]
        nearest = (points - centres).square().sum(dim=1)
        for _ in range(1, k):
            total = float(nearest.sum())
            probs = nearest / total if total > 0 else torch.full_like(nearest, 1.0 / n)
            index = int(torch.multinomial(probs, 1, generator=generator))
            centres = torch.cat([centres, points[index:index + 1]])
            nearest = torch.minimum(nearest, (points - points[index]).square().sum(dim=1))
        labels = None
        for _ in range(max_iter):
            distances = torch.cdist(points, centres).square()
            new_labels = distances.argmin(dim=1)
            if labels is not None and torch.equal(new_labels, labels):
                break
            labels = new_labels
            counts = torch.bincount(labels, minlength=k).to(points.dtype)
            sums = torch.zeros_like(centres).index_add_(0, labels, points)
            # An emptied cluster keeps its centre.
            filled = counts > 0
            centres = torch.where(filled.unsqueeze(1), sums / counts.clamp_min(1).unsqueeze(1),
                                  centres)
        inertia = float(torch.cdist(points, centres).square().min(dim=1).values.sum())
        if inertia < best_inertia - 1e-12:
            best_labels, best_inertia = labels, inertia
    return best_labels


def neuron_modules(data, method: str = "components", k: int | None = None,
                   seed: int = 0) -> Tensor:
    r"""Modules (clusters) of neurons from the graph alone.

    * ``"components"``: connected components;
    * ``"spectral"``: spectral clustering: the ``k`` eigenvectors of the smallest
      eigenvalues of :math:`\mathbf{L}_{sym}`, rows normalised to unit length, then a
      seeded k-means (k-means++ starts, best of 10) (Ng, Jordan & Weiss, 2001);
    * ``"louvain"``: :func:`networkx.community.louvain_communities` with the edge weights.

    ``k`` (the number of modules) is required by ``"spectral"`` and unused by the others.

    Returns:
        ``[N]`` long tensor on the graph's device, modules numbered ``0..C-1`` in order of
        first appearance (node 0 is in module 0).

    Example:
        >>> # Two triangles 0-1-2 and 3-4-5 joined by the edge 2-3.
        >>> edge_index = torch.tensor([[0, 1, 1, 2, 2, 0, 3, 4, 4, 5, 5, 3, 2, 3],
        ...                            [1, 0, 2, 1, 0, 2, 4, 3, 5, 4, 3, 5, 3, 2]])
        >>> neuron_modules(Data(edge_index=edge_index, num_nodes=6), "spectral", k=2)
        tensor([0, 0, 0, 1, 1, 1])
    """
    check_choice(method, "method", NEURON_MODULE_METHODS)
    check_int(seed, "seed")
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    device = edge_index.device
    if method == "components":
        return connected_components(data)[1]
    if method == "spectral":
        if k is None:
            raise ValueError("k (the number of modules) is required for method='spectral'")
        check_int(k, "k", minimum=1, maximum=num_nodes)
        _, vectors = eigenbasis(data, "sym", k=k)
        points = vectors.double().cpu()
        points = points / points.norm(dim=1, keepdim=True).clamp_min(1e-12)
        labels = _kmeans(points, k, seed)
        return _first_appearance(labels).to(device)
    import networkx as nx

    communities = nx.community.louvain_communities(to_networkx(data), weight="weight",
                                                   seed=seed)
    labels = torch.empty(num_nodes, dtype=torch.long)
    for module, members in enumerate(communities):
        labels[list(members)] = module
    return _first_appearance(labels).to(device)


def modularity(data, labels, resolution: float = 1.0) -> float:
    r"""Newman's weighted modularity of a partition of the nodes.

    .. math::
        Q = \frac{1}{S_0}\sum_{ij}\Big[W_{ij} - \gamma\frac{d_i d_j}{S_0}\Big]
            \delta(c_i, c_j)
          = \sum_c \Big[\frac{W_c}{S_0} - \gamma\Big(\frac{D_c}{S_0}\Big)^2\Big],

    with :math:`W_c` the weight inside module :math:`c` (both directions),
    :math:`D_c` its total degree and :math:`\gamma` the resolution; equal to
    :func:`networkx.community.modularity`. ``nan`` for a graph without edges.

    Args:
        data (Data): the graph.
        labels: ``[N]`` integer module of every node.
        resolution (float): :math:`\gamma`. (default: ``1.0``)

    Example:
        >>> data = Data(edge_index=torch.tensor([[0, 1, 2, 3], [1, 0, 3, 2]]), num_nodes=4)
        >>> modularity(data, torch.tensor([0, 0, 1, 1]))
        0.5
    """
    num_nodes, edge_index, edge_weight = graph_tensors(data)
    labels = _labels(labels, "labels", num_nodes).to(edge_index.device)
    total = edge_weight.sum()
    if float(total) == 0.0:
        return math.nan
    modules = torch.unique(labels, return_inverse=True)[1]
    num_modules = int(modules.max()) + 1
    same = modules[edge_index[0]] == modules[edge_index[1]]
    inside = float((edge_weight * same).sum())
    degree = torch.zeros(num_nodes, dtype=edge_weight.dtype, device=edge_weight.device)
    degree.index_add_(0, edge_index[0], edge_weight)
    module_degree = torch.zeros(num_modules, dtype=edge_weight.dtype, device=degree.device)
    module_degree.index_add_(0, modules, degree)
    expected = float((module_degree / total).square().sum())
    return inside / float(total) - resolution * expected


# --------------------------------------------------------------------------------------
# agreement between partitions and between graphs
# --------------------------------------------------------------------------------------

def edge_jaccard(a, b) -> float:
    r"""Jaccard index of the undirected edge sets of two graphs over the same nodes,
    :math:`|E_a \cap E_b| / |E_a \cup E_b|` (weights ignored; 1.0 when both have no edge).

    Example:
        >>> a = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> b = Data(edge_index=torch.tensor([[0, 1], [1, 0]]), num_nodes=3)
        >>> edge_jaccard(a, b)
        0.5
    """
    num_a, index_a, _ = graph_tensors(a)
    num_b, index_b, _ = graph_tensors(b)
    if num_a != num_b:
        raise ValueError(f"a and b must have the same nodes, got {num_a} and {num_b} nodes")

    def edges(index: Tensor) -> set[tuple[int, int]]:
        low, high = torch.minimum(index[0], index[1]), torch.maximum(index[0], index[1])
        return set(zip(low.tolist(), high.tolist()))

    first, second = edges(index_a), edges(index_b)
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def _contingency(a, b) -> tuple[list[tuple[int, int, int]], list[int], list[int], int]:
    """Occupied cells ``(count, row, col)`` of the contingency table, its row sums, column
    sums, and the number of items."""
    a = _labels(a, "a").cpu()
    b = _labels(b, "b").cpu()
    if a.numel() != b.numel():
        raise ValueError(f"a and b must label the same items, got {a.numel()} and {b.numel()}")
    _, row = torch.unique(a, return_inverse=True)
    _, col = torch.unique(b, return_inverse=True)
    num_cols = int(col.max()) + 1 if col.numel() else 0
    # Sparse table: only the occupied (row, col) cells, never the full rows x cols grid.
    codes, counts = torch.unique(row * num_cols + col, return_counts=True)
    cells = list(zip(counts.tolist(), (codes // max(num_cols, 1)).tolist(),
                     (codes % max(num_cols, 1)).tolist()))
    return cells, torch.bincount(row).tolist(), torch.bincount(col).tolist(), a.numel()


def adjusted_rand_index(a, b) -> float:
    r"""Adjusted Rand index of two partitions (labels ``[n]``; tensors or sequences).

    From the pair counts :math:`(tn, fp, fn, tp)` of the contingency table
    :math:`n_{ij}` (ordered pairs: :math:`tp = \sum n_{ij}^2 - n`,
    :math:`fp = \sum_j b_j^2 - \sum n_{ij}^2`, :math:`fn = \sum_i a_i^2 - \sum n_{ij}^2`):

    .. math::
        \mathrm{ARI} = \frac{2(tp\cdot tn - fn\cdot fp)}
                            {(tp + fn)(fn + tn) + (tp + fp)(fp + tn)},

    equal to :func:`sklearn.metrics.adjusted_rand_score` (1 for identical partitions up to
    renaming, ~0 for random ones). Exact integer arithmetic.

    Example:
        >>> adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2])
        0.5714285714285714
    """
    cells, rows, cols, n = _contingency(a, b)
    sum_squares = sum(c * c for c, _, _ in cells)
    true_positive = sum_squares - n
    false_positive = sum(c * c for c in cols) - sum_squares
    false_negative = sum(c * c for c in rows) - sum_squares
    true_negative = n * n - false_positive - false_negative - sum_squares
    if false_negative == 0 and false_positive == 0:
        return 1.0
    numerator = 2 * (true_positive * true_negative - false_negative * false_positive)
    denominator = ((true_positive + false_negative) * (false_negative + true_negative)
                   + (true_positive + false_positive) * (false_positive + true_negative))
    return numerator / denominator


def _entropy(counts: Sequence[int], n: int) -> float:
    return -sum(c / n * (math.log(c) - math.log(n)) for c in counts if c > 0)


def normalized_mutual_info(a, b) -> float:
    r"""Normalised mutual information of two partitions, arithmetic-mean normalisation.

    .. math::
        \mathrm{NMI} = \frac{I(a; b)}{\tfrac12 (H(a) + H(b))},\qquad
        I = \sum_{ij} \frac{n_{ij}}{n}\log\frac{n\,n_{ij}}{a_i b_j}

    (natural logarithms), equal to :func:`sklearn.metrics.normalized_mutual_info_score`
    with its default ``average_method="arithmetic"``: 1 when both are a single module.

    Example:
        >>> normalized_mutual_info([0, 0, 1, 1], [1, 1, 0, 0])
        1.0
    """
    cells, rows, cols, n = _contingency(a, b)
    if len(rows) == len(cols) and len(rows) <= 1:
        return 1.0
    if len(rows) == 1 or len(cols) == 1:
        return 0.0
    eps = 2.220446049250313e-16
    mutual = 0.0
    for count, i, j in cells:
        share = count / n
        # Same order of operations as scikit-learn, for equal rounding.
        term = (share * (math.log(count) - math.log(n))
                + share * (-math.log(rows[i] * cols[j]) + math.log(n) + math.log(n)))
        mutual += 0.0 if abs(term) < eps else term
    mutual = max(mutual, 0.0)
    if mutual == 0.0:
        return 0.0
    return mutual / (0.5 * (_entropy(rows, n) + _entropy(cols, n)))


# --------------------------------------------------------------------------------------
# neurons <-> input features
# --------------------------------------------------------------------------------------

def feature_correlations(inputs: Tensor, activations: Tensor, node_dim: int = 1,
                         mask: Tensor | None = None) -> Tensor:
    r"""Pearson correlation of every neuron with every input feature over the samples.

    .. math::
        r_{nf} = \frac{\sum_s (h_{sn} - \bar h_n)(x_{sf} - \bar x_f)}
                      {\lVert h_{\cdot n} - \bar h_n\rVert\,\lVert x_{\cdot f} - \bar x_f\rVert}

    A constant neuron or feature (all samples equal) has correlation 0 with everything.

    Args:
        inputs (Tensor): ``[S, F]`` input features.
        activations (Tensor): ``[S, N]`` neuron activations for the same samples, or
            ``[B, N, *]`` (a conv map: the ``S = B * ...`` positions are the samples, in the
            order of :func:`gsr_pyg.capture.samples_by_neurons`).
        node_dim (int): the axis of ``activations`` that holds the neurons; ``-1`` for
            ``[B, T, D]``, whose every token is a sample. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes of ``activations``; it
            drops the padded samples from ``activations`` and the same rows from ``inputs``
            (which then has one row per position, padded ones included). (default: ``None``)

    Returns:
        ``[N, F]`` tensor on the device of ``activations``.

    Example:
        >>> x = torch.randn(100, 3)
        >>> feature_correlations(x, x[:, :2]).diagonal()
        tensor([1.0000, 1.0000])
    """
    check_tensor(inputs, "inputs", ndim=2, floating=True)
    check_tensor(activations, "activations", min_ndim=2, floating=True)
    neuron_axis(activations, node_dim, "activations")
    keep = None
    if mask is not None:
        keep = check_sample_mask(mask, activations, node_dim).reshape(-1)
    activations = samples_by_neurons(activations, node_dim)
    if inputs.size(0) != activations.size(0):
        raise ValueError(
            f"inputs and activations must have the same samples in dimension 0, got "
            f"{inputs.size(0)} and {activations.size(0)}"
        )
    if keep is not None:
        inputs, activations = inputs[keep.to(inputs.device)], activations[keep]
    if inputs.size(0) < 2:
        raise ValueError(f"correlations need at least 2 samples, got {inputs.size(0)}")
    dtype = torch.promote_types(_compute_dtype(inputs), _compute_dtype(activations))
    device = activations.device

    def standardised(values: Tensor) -> Tensor:
        values = values.to(device=device, dtype=dtype)
        constant = (values == values[:1]).all(dim=0)
        centred = values - values.mean(dim=0, keepdim=True)
        norm = centred.norm(dim=0)
        # Exactly constant columns are 0, not rounding noise divided by a tiny norm.
        return torch.where(constant, torch.zeros_like(centred), centred / norm.clamp_min(1e-30))

    return standardised(activations).T @ standardised(inputs)


def _label_means(values: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct labels ``[C]`` (increasing) and the mean of the rows of ``values``
    ``[N, K]`` over each label's rows ``[C, K]``; ``labels`` is a valid ``[N]`` long tensor
    on the device of ``values`` with ``N >= 1``. Only labels in use get a row, so no mean is
    ever 0 / 0."""
    modules, inverse = torch.unique(labels, return_inverse=True)
    sums = values.new_zeros(modules.numel(), values.size(1)).index_add_(0, inverse, values)
    counts = torch.bincount(inverse, minlength=modules.numel()).to(values.dtype)
    return modules, sums / counts.unsqueeze(1)


def feature_loadings(correlations: Tensor, neuron_labels, absolute: bool = True) -> Tensor:
    r"""Loading of every feature on every neuron module: the mean absolute correlation of
    the feature with the module's neurons.

    .. math::
        \ell_{fc} = \frac{1}{|c|}\sum_{n \in c} |r_{nf}|

    The modules are the label values in use, in increasing order: column ``c`` is module
    ``torch.unique(neuron_labels)[c]``, so labels ``0..C-1`` give column ``c`` = module
    ``c``, and a label number nobody uses (labels ``[0, 0, 2]``) gets no column rather than
    an empty one. :func:`feature_modules` and :func:`gsr_pyg.readouts.module_loadings` read
    their loadings here.

    Args:
        correlations (Tensor): ``[N, F]`` neuron x feature correlations :math:`r`
            (:func:`feature_correlations`), ``N >= 1``.
        neuron_labels: ``[N]`` integer module of every neuron (tensor or sequence; any
            integers).
        absolute (bool): ``False`` averages the signed correlations instead, whose sign
            says whether the module rises or falls with the feature. (default: ``True``)

    Returns:
        ``[F, C]`` tensor on the device and in the dtype of ``correlations``.

    Example:
        >>> r = torch.tensor([[0.9, -0.1], [0.7, 0.3], [0.0, 0.8]])
        >>> feature_loadings(r, torch.tensor([0, 0, 2]))    # modules 0 and 2
        tensor([[0.8000, 0.0000],
                [0.2000, 0.8000]])
    """
    check_tensor(correlations, "correlations", ndim=2, floating=True)
    check_bool(absolute, "absolute")
    if correlations.size(0) == 0:
        raise ValueError("correlations must have at least one row (neuron), got 0 rows")
    labels = _labels(neuron_labels, "neuron_labels", correlations.size(0),
                     "row of correlations").to(correlations.device)
    values = correlations.abs() if absolute else correlations
    return _label_means(values, labels)[1].T


def feature_modules(inputs: Tensor, activations: Tensor, neuron_labels) -> Tensor:
    r"""Assign every input feature to the neuron module that carries it most.

    Feature :math:`f` joins module :math:`\arg\max_c \frac{1}{|c|}\sum_{n \in c}
    |r_{nf}|` (its highest :func:`feature_loadings`, the mean absolute Pearson correlation
    of :func:`feature_correlations`; ties go to the smallest label). Only the label values
    in use are modules.

    Args:
        inputs (Tensor): ``[S, F]`` input features.
        activations (Tensor): ``[S, N]`` (or ``[B, N, *]``) neuron activations.
        neuron_labels: ``[N]`` integer module of every neuron (e.g. from
            :func:`neuron_modules`; any integers).

    Returns:
        ``[F]`` long tensor of module labels (values taken from ``neuron_labels``).

    Example:
        >>> inputs = torch.randn(200, 2)
        >>> activations = inputs[:, [0, 0, 1]]    # neurons 0 and 1 carry feature 0
        >>> feature_modules(inputs, activations, torch.tensor([0, 0, 1]))
        tensor([0, 1])
    """
    correlations = feature_correlations(inputs, activations)
    labels = _labels(neuron_labels, "neuron_labels", correlations.size(0), "neuron")
    labels = labels.to(correlations.device)
    return torch.unique(labels)[feature_loadings(correlations, labels).argmax(dim=1)]


# --------------------------------------------------------------------------------------
# where the energy sits on the graph spectrum
# --------------------------------------------------------------------------------------

#: :func:`graph_fourier_energy` and :func:`graph_wavelet_energy` with ``method="auto"``
#: decompose graphs up to this many nodes exactly (a float64 ``eigh``: 1.7 s at 2,048 nodes
#: on one core, growing as N^3) and estimate larger ones from Chebyshev moments.
FOURIER_EXACT_MAX_NODES = 2048
#: Frequency bands of a Chebyshev estimate when none are asked for.
DEFAULT_BANDS = 32
#: Chebyshev order of the read-outs' estimates when none is given.
READOUT_ORDER = 100
READOUT_METHODS = ("auto", "exact", "chebyshev")


class SpectralEnergy(NamedTuple):
    """Energy of activations per graph frequency (:func:`graph_fourier_energy`).

    ``frequencies``: the eigenvalues ``[N]`` (exact, no bands) or the band centres ``[J]``;
    ``energy``: the energy at each, same length, summing to the mean squared norm of the
    samples; ``edges``: the ``[J + 1]`` band edges (None per eigenvalue); ``method``:
    ``"exact"`` or ``"chebyshev"``.
    """

    frequencies: Tensor
    energy: Tensor
    edges: Tensor | None
    method: str


class WaveletEnergy(NamedTuple):
    """Energy of activations per wavelet scale (:func:`graph_wavelet_energy`).

    ``scales`` ``[J]`` (coarse to fine), ``energy`` ``[J]`` the mean energy of the wavelet
    coefficients at each scale, ``peaks`` ``[J]`` the frequency where each scale's kernel
    peaks, ``lowpass`` (0-dim) the energy of the scaling-function coefficients, ``method``
    ``"exact"`` or ``"chebyshev"``.
    """

    scales: Tensor
    energy: Tensor
    peaks: Tensor
    lowpass: Tensor
    method: str


def _readout_setup(x, data, normalization, method: str, order: int | None, node_dim: int,
                   mask) -> tuple[Tensor, str, float, int]:
    """Checked rows ``[S, N]`` in the work dtype of their device, the method, the spectral
    bound (1.0 without edges) and the Chebyshev order."""
    check_normalization(normalization)
    check_choice(method, "method", READOUT_METHODS)
    num_nodes = graph_tensors(data)[0]
    if order is not None:
        check_int(order, "order", minimum=1, maximum=MAX_ORDER)
    rows, _ = _signal(x, num_nodes, node_dim=node_dim, mask=mask)
    rows = rows.detach().to(work_dtype(rows.device))
    if method == "auto":
        method = "exact" if num_nodes <= FOURIER_EXACT_MAX_NODES else "chebyshev"
    bound = lambda_max_bound(data, normalization) or 1.0
    return rows, method, bound, READOUT_ORDER if order is None else order


def _eigen_energy(rows: Tensor, data, normalization) -> tuple[Tensor, Tensor]:
    """Eigenvalues (clamped at 0) and the mean of :math:`|\\mathbf{U}^\\top\\mathbf{a}|^2`
    over the rows."""
    eigenvalues, vectors = eigenbasis(data, normalization, dtype=rows.dtype)
    eigenvalues, vectors = eigenvalues.to(rows.device), vectors.to(rows.device)
    return eigenvalues.clamp_min(0.0), (rows @ vectors).square().mean(dim=0)


def _jackson_damping(order: int, dtype: torch.dtype, device) -> Tensor:
    """Jackson's factors :math:`g_k` (Weisse et al., Rev. Mod. Phys. 78, 2006, eq. 71): a
    positive kernel, so a damped series of a function :math:`\\ge 0` stays :math:`\\ge 0`."""
    n = order + 2
    k = torch.arange(order + 1, dtype=dtype, device=device)
    return ((n - k) * torch.cos(math.pi * k / n)
            + torch.sin(math.pi * k / n) / math.tan(math.pi / n)) / n


def _band_coefficients(edges: Tensor, lambda_max: float, order: int) -> Tensor:
    """``[J, K+1]`` Jackson-damped Chebyshev coefficients of the indicators of the bands
    ``[e_j, e_{j+1}]``: the rows sum to :math:`(1, 0, ..., 0)`, the constant 1."""
    theta = torch.arccos((2.0 * edges / lambda_max - 1.0).clamp(-1.0, 1.0))
    upper, lower = theta[:-1].unsqueeze(1), theta[1:].unsqueeze(1)  # theta falls as lambda rises
    k = torch.arange(1, order + 1, dtype=edges.dtype, device=edges.device)
    series = torch.cat([(upper - lower) / math.pi,
                        2.0 * (torch.sin(k * upper) - torch.sin(k * lower)) / (k * math.pi)],
                       dim=1)
    return series * _jackson_damping(order, edges.dtype, edges.device)


def graph_fourier_energy(x: Tensor, data, normalization: str | None = None,
                         bands: int | None = None, method: str = "auto",
                         order: int | None = None, node_dim: int = 1,
                         mask: Tensor | None = None) -> SpectralEnergy:
    r"""Where the activations' energy sits on the graph spectrum.

    With the eigenpairs :math:`(\lambda_k, \mathbf{u}_k)` of :math:`\mathbf{L}`, every
    sample :math:`\mathbf{a}_b` has graph-Fourier coefficients :math:`\hat a_{bk} =
    \mathbf{u}_k^\top\mathbf{a}_b`, and

    .. math::
        E_k = \frac{1}{B}\sum_b |\hat a_{bk}|^2, \qquad
        \sum_k E_k = \frac{1}{B}\sum_b \lVert\mathbf{a}_b\rVert^2 \quad\text{(Parseval)},

    low :math:`\lambda_k` being the smooth patterns; graph spectral regularization moves
    energy towards them (:math:`\frac1B\sum_b\mathbf{a}_b^\top\mathbf{L}\mathbf{a}_b =
    \sum_k \lambda_k E_k`).

    * ``"exact"`` (``"auto"`` up to :data:`FOURIER_EXACT_MAX_NODES` = 2,048 nodes): a
      float64 eigendecomposition; one :math:`E_k` per eigenvalue, or, with ``bands``, the
      sum of the :math:`E_k` whose :math:`\lambda_k` falls in each band. The energies of a
      repeated eigenvalue depend on the eigenbasis ``eigh`` picks; their sum (and a band
      holding them all) does not.
    * ``"chebyshev"`` (``"auto"`` above): no eigendecomposition. ``bands`` (default 32)
      equal bands on :math:`[0, \lambda_{max}]` (:func:`gsr_pyg.spectral.lambda_max_bound`);
      band :math:`j` gets :math:`\frac1B\sum_b \mathbf{a}_b^\top g_j(\mathbf{L})
      \mathbf{a}_b = \sum_k g_j(\lambda_k)E_k`, with :math:`g_j` the Chebyshev series of
      order ``order`` (default 100) of the band's indicator, damped with Jackson's kernel
      (the kernel polynomial method), computed from one set of Chebyshev moments
      (:func:`gsr_pyg.spectral.chebyshev_moments`, ``order`` sparse products). The
      :math:`g_j` are :math:`\ge 0` and sum to exactly 1, so the estimate is
      :math:`\ge 0` and obeys Parseval (up to rounding); the price is a blur: energy
      within about :math:`\pi\lambda_{max}/(2K)` of an edge is shared with the
      neighbouring band.

    Args:
        x (Tensor): ``[N]``, ``[B, N]`` or ``[B, N, *]`` activations (every position of a
            conv map is a sample).
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        bands (int, optional): the number of equal bands on :math:`[0, \lambda_{max}]`
            (the last one closed). (default: per eigenvalue for ``"exact"``, 32 for
            ``"chebyshev"``)
        method (str): ``"auto"``, ``"exact"`` or ``"chebyshev"``. (default: ``"auto"``)
        order (int, optional): Chebyshev order K. (default: ``100``)
        node_dim (int): the axis of ``x`` that holds the nodes. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes; only its true
            positions count. (default: ``None``)

    Returns:
        :class:`SpectralEnergy`, float64 (float32 on MPS), on the device of ``x``, without
        gradient.

    Example:
        >>> path = Data(edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]), num_nodes=3)
        >>> spectrum = graph_fourier_energy(torch.tensor([[0., 1., 3.]]), path)
        >>> spectrum.frequencies.round(decimals=4)        # the eigenvalues of the path
        tensor([0., 1., 3.], dtype=torch.float64)
        >>> spectrum.energy.round(decimals=4)             # sums to |a|^2 = 10
        tensor([5.3333, 4.5000, 0.1667], dtype=torch.float64)
    """
    rows, method, bound, order = _readout_setup(x, data, normalization, method, order,
                                                node_dim, mask)
    if bands is not None:
        check_int(bands, "bands", minimum=1)
    elif method == "chebyshev":
        bands = DEFAULT_BANDS
    if bands is None:
        eigenvalues, energy = _eigen_energy(rows, data, normalization)
        return SpectralEnergy(eigenvalues, energy, None, method)
    edges = torch.linspace(0.0, bound, bands + 1, dtype=rows.dtype, device=rows.device)
    centres = (edges[:-1] + edges[1:]) / 2
    if method == "exact":
        eigenvalues, energy = _eigen_energy(rows, data, normalization)
        band = torch.searchsorted(edges[1:-1], eigenvalues, right=True)
        per_band = energy.new_zeros(bands).index_add_(0, band, energy)
        return SpectralEnergy(centres, per_band, edges, method)
    moments = chebyshev_moments(rows, data, normalization, order, bound).mean(dim=0)
    per_band = _band_coefficients(edges, bound, order) @ moments
    return SpectralEnergy(centres, per_band, edges, method)


def hammond_kernel(x: Tensor) -> Tensor:
    r"""The wavelet kernel of Hammond, Vandergheynst and Gribonval (2011), with their
    :math:`\alpha = \beta = 2`, :math:`x_1 = 1`, :math:`x_2 = 2`:

    .. math::
        g(x) = \begin{cases} x^2 & x < 1 \\ -5 + 11x - 6x^2 + x^3 & 1 \le x \le 2 \\
        4/x^2 & x > 2 \end{cases}

    a band-pass: 0 at 0, largest (1.3849) at :math:`x^* = 2 - 1/\sqrt3 \approx 1.4226`,
    decaying as :math:`x^{-2}`; continuous with its first derivative.

    Example:
        >>> hammond_kernel(torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0]))
        tensor([0.0000, 0.2500, 1.0000, 1.0000, 0.2500])
    """
    check_tensor(x, "x", floating=True)
    spline = -5.0 + 11.0 * x - 6.0 * x.square() + x.pow(3)
    return torch.where(x < 1.0, x.square(),
                       torch.where(x <= 2.0, spline, 4.0 / x.clamp_min(2.0).square()))


_HAMMOND_PEAK = 2.0 - 1.0 / math.sqrt(3.0)  # where the kernel is largest
_HAMMOND_MAX = -5.0 + 11.0 * _HAMMOND_PEAK - 6.0 * _HAMMOND_PEAK**2 + _HAMMOND_PEAK**3
_LOWPASS_FACTOR = 20.0  # lambda_min = lambda_max / 20, as in the SGWT toolbox


def _wavelet_scales(scales, num_scales: int, bound: float, dtype, device) -> Tensor:
    if scales is None:
        check_int(num_scales, "num_scales", minimum=1)
        coarsest = 2.0 * _LOWPASS_FACTOR / bound  # x_2 / lambda_min
        finest = 1.0 / bound                        # x_1 / lambda_max
        return torch.logspace(math.log10(coarsest), math.log10(finest), num_scales,
                              dtype=dtype, device=device)
    given = torch.as_tensor(scales, dtype=dtype) if not isinstance(scales, Tensor) else scales
    if given.dim() != 1 or given.numel() == 0 or not bool(torch.isfinite(given).all()) \
            or not bool((given > 0).all()):
        raise ValueError(f"scales must be a non-empty 1-D sequence of finite numbers > 0, "
                         f"got {describe(scales)}")
    return given.to(dtype=dtype, device=device)


def graph_wavelet_energy(x: Tensor, data, normalization: str | None = None,
                         num_scales: int = 6, scales=None, method: str = "auto",
                         order: int | None = None, node_dim: int = 1,
                         mask: Tensor | None = None) -> WaveletEnergy:
    r"""Energy of the activations per scale of the spectral graph wavelet transform
    (Hammond, Vandergheynst and Gribonval, 2011).

    The wavelet at scale :math:`s` is the filter :math:`g(s\mathbf{L})` with
    :func:`hammond_kernel` :math:`g`; the energy of the wavelet coefficients of the
    samples at that scale is

    .. math::
        W_s = \frac1B\sum_b \lVert g(s\mathbf{L})\,\mathbf{a}_b\rVert^2
            = \sum_k g(s\lambda_k)^2 E_k

    (:math:`E_k` of :func:`graph_fourier_energy`), a band of frequencies around
    :math:`x^*/s` (:math:`x^* \approx 1.4226`, the ``peaks``): large scales see the coarse,
    smooth structure, small ones the fine detail. The scaling function
    :math:`h(\lambda) = \gamma\,e^{-(\lambda / (0.6\lambda_{min}))^4}` (:math:`\gamma` the
    kernel's maximum) covers the lowest frequencies (``lowpass``). Default scales, as in
    the SGWT toolbox: ``num_scales`` log-spaced from :math:`x_2/\lambda_{min}` down to
    :math:`x_1/\lambda_{max}`, :math:`\lambda_{min} = \lambda_{max}/20`, with
    :math:`\lambda_{max}` = :func:`gsr_pyg.spectral.lambda_max_bound` for both methods
    (the same scales whichever computes them). A wavelet frame is not orthogonal: the
    energies sum to :math:`\sum_k G(\lambda_k)E_k` with
    :math:`G = h^2 + \sum_s g(s\cdot)^2`, not to the total.

    ``"exact"`` uses the eigendecomposition (``"auto"`` up to 2,048 nodes);
    ``"chebyshev"`` evaluates each :math:`g(s\lambda)^2` and :math:`h^2` as a
    :func:`gsr_pyg.spectral.chebyshev_fit` of order ``order`` (default 100) on one set of
    Chebyshev moments; each estimate is within that fit's ``max_error`` times the mean
    squared norm of the samples.

    Args:
        x (Tensor): ``[N]``, ``[B, N]`` or ``[B, N, *]`` activations.
        data (Data): the neuron graph.
        normalization (str, optional): ``None`` or ``"sym"``. (default: ``None``)
        num_scales (int): the number of default scales. (default: ``6``)
        scales (optional): the scales, a 1-D sequence of numbers > 0 (instead of the
            default ones).
        method (str): ``"auto"``, ``"exact"`` or ``"chebyshev"``. (default: ``"auto"``)
        order (int, optional): Chebyshev order K. (default: ``100``)
        node_dim (int): the axis of ``x`` that holds the nodes. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes. (default: ``None``)

    Returns:
        :class:`WaveletEnergy`, float64 (float32 on MPS), on the device of ``x``, without
        gradient.

    Example (a smooth ramp on a path of 16 nodes: its energy sits at the coarse scales):
        >>> i = torch.arange(15)
        >>> path = Data(edge_index=torch.cat([torch.stack([i, i + 1]), torch.stack([i + 1, i])],
        ...                                  dim=1), num_nodes=16)
        >>> wavelets = graph_wavelet_energy(torch.linspace(-1, 1, 16), path, num_scales=4)
        >>> int(wavelets.energy.argmax())    # scale 0 is the coarsest
        0
    """
    rows, method, bound, order = _readout_setup(x, data, normalization, method, order,
                                                node_dim, mask)
    scales = _wavelet_scales(scales, num_scales, bound, rows.dtype, rows.device)
    lowest = bound / _LOWPASS_FACTOR

    def lowpass_squared(lam: Tensor) -> Tensor:
        return (_HAMMOND_MAX * torch.exp(-(lam / (0.6 * lowest)).pow(4))).square()

    def wavelet_squared(scale: float):
        return lambda lam: hammond_kernel(scale * lam).square()

    responses = [wavelet_squared(float(s)) for s in scales] + [lowpass_squared]
    if method == "exact":
        eigenvalues, energy = _eigen_energy(rows, data, normalization)
        values = torch.stack([response(eigenvalues) @ energy for response in responses])
    else:
        moments = chebyshev_moments(rows, data, normalization, order, bound).mean(dim=0)
        values = torch.stack([
            chebyshev_fit(SpectralFilter(response), bound, order).coefficients.to(moments)
            @ moments for response in responses])
    return WaveletEnergy(scales, values[:-1], _HAMMOND_PEAK / scales, values[-1], method)


# --------------------------------------------------------------------------------------
# clustering features (or anything) by distances, with the number of clusters from the data
# --------------------------------------------------------------------------------------

#: Below this best mean silhouette a clustering is read as one cluster: Kaufman & Rousseeuw's
#: threshold of "no substantial structure".
MIN_SILHOUETTE = 0.25
CLUSTER_METHODS = ("average", "kmeans")


def silhouette_score(distances: Tensor, labels) -> float:
    r"""Mean silhouette of a partition, from a matrix of pairwise distances.

    For item :math:`i` in cluster :math:`A`, :math:`a_i` is its mean distance to the other
    items of :math:`A` and :math:`b_i` the smallest mean distance to the items of another
    cluster; :math:`s_i = (b_i - a_i) / \max(a_i, b_i)`, 0 for an item alone in its
    cluster (Rousseeuw, 1987). Equal to :func:`sklearn.metrics.silhouette_score` with
    ``metric="precomputed"``.

    Args:
        distances (Tensor): ``[n, n]`` symmetric, non-negative, zero diagonal.
        labels: ``[n]`` integer cluster of every item, 2 to ``n - 1`` clusters.

    Example:
        >>> d = torch.tensor([[0., 1., 4., 5.], [1., 0., 4., 4.], [4., 4., 0., 1.],
        ...                   [5., 4., 1., 0.]])
        >>> round(silhouette_score(d, [0, 0, 1, 1]), 4)
        0.7639
    """
    check_tensor(distances, "distances", ndim=2, floating=True)
    n = distances.size(0)
    if distances.size(1) != n:
        raise ValueError(f"distances must be square, got shape {tuple(distances.shape)}")
    labels = _labels(labels, "labels", n, "row of distances").to(distances.device)
    clusters, inverse, sizes = torch.unique(labels, return_inverse=True, return_counts=True)
    if not 2 <= clusters.numel() <= n - 1:
        raise ValueError(f"labels must form 2 to n - 1 = {n - 1} clusters, got "
                         f"{clusters.numel()}")
    d = distances.double()
    member = torch.nn.functional.one_hot(inverse, clusters.numel()).double()  # [n, C]
    mean_to = (d @ member) / sizes.double()  # [n, C]: mean distance to every cluster
    own_size = sizes[inverse].double()
    own = mean_to.gather(1, inverse[:, None]).squeeze(1)
    a = own * own_size / (own_size - 1).clamp_min(1)  # leave the item itself out
    b = mean_to.masked_fill(member.bool(), math.inf).min(dim=1).values
    s = (b - a) / torch.maximum(a, b).clamp_min(1e-300)
    s = torch.where(own_size > 1, s, torch.zeros_like(s))
    return float(s.mean())


def average_linkage(distances: Tensor, num_clusters: int) -> Tensor:
    """Average-linkage (UPGMA) hierarchical clustering cut into ``num_clusters`` clusters
    (:func:`scipy.cluster.hierarchy.linkage` and ``fcluster(..., "maxclust")``); ``[n]``
    labels numbered in order of first appearance.

    Example:
        >>> d = torch.tensor([[0., 1., 4.], [1., 0., 4.], [4., 4., 0.]])
        >>> average_linkage(d, 2)
        tensor([0, 0, 1])
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    d = distances.detach().double().cpu()
    d = 0.5 * (d + d.T)
    d.fill_diagonal_(0.0)
    tree = linkage(squareform(d.clamp_min(0.0).numpy(), checks=False), method="average")
    labels = fcluster(tree, t=num_clusters, criterion="maxclust")
    return _first_appearance(torch.as_tensor(labels, dtype=torch.long))


class Clustering(NamedTuple):
    """What :func:`cluster_by_silhouette` returns."""

    #: ``[n]`` cluster of every item, numbered in order of first appearance.
    labels: Tensor
    #: the number of clusters chosen.
    num_clusters: int
    #: ``{k: mean silhouette}`` of every cut tried.
    silhouettes: dict[int, float]


def cluster_by_silhouette(distances: Tensor, method: str = "average",
                          points: Tensor | None = None, max_clusters: int | None = None,
                          min_silhouette: float = MIN_SILHOUETTE, seed: int = 0) -> Clustering:
    r"""Cluster items with the number of clusters chosen from the data: the :math:`k` in
    ``2..max_clusters`` whose partition has the highest mean :func:`silhouette_score` on
    ``distances``, or a single cluster when no :math:`k` reaches ``min_silhouette``
    (default 0.25, :data:`MIN_SILHOUETTE`; ties to the smaller :math:`k`).

    Args:
        distances (Tensor): ``[n, n]`` pairwise distances (what the silhouette reads).
        method (str): ``"average"``: :func:`average_linkage` of ``distances``;
            ``"kmeans"``: a seeded k-means (k-means++ starts, best of 10) of ``points``
            (whose euclidean distances ``distances`` should be). (default: ``"average"``)
        points (Tensor, optional): ``[n, d]`` coordinates, for ``"kmeans"``.
        max_clusters (int, optional): the largest :math:`k` tried (default and at most
            ``n - 1``).
        min_silhouette (float): the least best silhouette of a cut into several clusters.
        seed (int): seed of the k-means. (default: ``0``)

    Example:
        >>> d = torch.tensor([[0., 1., 4., 5.], [1., 0., 4., 4.], [4., 4., 0., 1.],
        ...                   [5., 4., 1., 0.]])
        >>> cluster_by_silhouette(d).labels
        tensor([0, 0, 1, 1])
    """
    check_tensor(distances, "distances", ndim=2, floating=True)
    check_choice(method, "method", CLUSTER_METHODS)
    check_int(seed, "seed")
    if isinstance(min_silhouette, bool) or not isinstance(min_silhouette, (int, float)) \
            or not -1.0 <= min_silhouette <= 1.0:
        raise ValueError(f"min_silhouette must be a number in [-1, 1], got "
                         f"{describe(min_silhouette)}")
    n = distances.size(0)
    if distances.size(1) != n or n == 0:
        raise ValueError(f"distances must be a non-empty square matrix, got shape "
                         f"{tuple(distances.shape)}")
    if not bool(torch.isfinite(distances).all()):
        raise ValueError("distances must be finite, got NaN or infinite values")
    if method == "kmeans":
        if points is None:
            raise ValueError("method='kmeans' needs points (the coordinates of the items)")
        check_tensor(points, "points", ndim=2, floating=True)
        if points.size(0) != n:
            raise ValueError(f"points must have one row per item ({n}), got "
                             f"{points.size(0)}")
    top = n - 1 if max_clusters is None else min(check_int(max_clusters, "max_clusters",
                                                           minimum=1), n - 1)
    silhouettes, best = {}, (min_silhouette, torch.zeros(n, dtype=torch.long), 1)
    for k in range(2, top + 1):
        if method == "average":
            labels = average_linkage(distances, k)
        else:
            labels = _first_appearance(_kmeans(points.detach().double().cpu(), k, seed))
        used = int(labels.max()) + 1
        if used < 2 or used > n - 1:
            continue  # ties in the tree can merge a cut; that k says nothing new
        silhouettes[k] = silhouette_score(distances, labels)
        if silhouettes[k] > best[0] + 1e-12:
            best = (silhouettes[k], labels, used)
    return Clustering(best[1].to(distances.device), best[2], silhouettes)
