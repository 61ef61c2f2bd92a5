r"""Placing the units of a trained layer onto a neuron graph: exact layouts by permutation.

The hidden units of an MLP block :math:`h = \phi(x W_1^\top + b_1)`,
:math:`y = h W_2^\top + b_2` are interchangeable: permuting them (the rows of :math:`W_1`
and :math:`b_1`, the columns of :math:`W_2`) leaves :math:`y` unchanged for any elementwise
:math:`\phi`. So the units of a model that is already trained can be *placed* on the nodes
of a graph (a grid, any graph with positions) so that co-activating units sit next to each
other, at no cost to the model: :func:`fit_layout` finds the placement,
:func:`permute_hidden` applies it, :func:`mlp_pairs` finds the MLP blocks of common models.

**Objective.** Node :math:`i` of the graph shows unit :math:`\pi_i` (``perm[i]``). For the
activations :math:`\mathbf{a}_s` of samples :math:`s = 1..S`, the Dirichlet energy of the
placed activations averaged over the samples is

.. math::
    E(\pi) = \frac1S \sum_s \sum_{\{i,j\} \in \mathcal{E}} w_{ij}
             (a_{s\pi_i} - a_{s\pi_j})^2
           = \sum_{\{i,j\} \in \mathcal{E}} w_{ij} D_{\pi_i \pi_j},
    \qquad
    D_{uv} = \frac1S \sum_s (a_{su} - a_{sv})^2 = M_{uu} + M_{vv} - 2 M_{uv},

with :math:`M = \frac1S \sum_s \mathbf{a}_s \mathbf{a}_s^\top` the second-moment matrix and
every undirected edge counted once: exactly the mean over samples of
:func:`gsr_pyg.metrics.dirichlet_energy` of ``activations[..., perm]``. A uniformly random
placement has the expected energy

.. math::
    E_\text{random} = W \cdot \frac{1}{N(N-1)} \sum_{u \ne v} D_{uv},
    \qquad W = \sum_{\{i,j\} \in \mathcal{E}} w_{ij},

so :math:`E(\pi) / E_\text{random}` is the smoothness ratio that
:func:`gsr_pyg.metrics.smoothness_ratio` estimates with sampled permutations. Minimising
:math:`E` over permutations is a quadratic assignment problem (NP-hard);
:func:`fit_layout` documents the heuristic it uses.

Example (four units that vary along a hidden line, placed on a path of four nodes)::

    >>> from gsr_pyg.graphs import line
    >>> x = torch.tensor([[0., 3., 1., 2.], [0., 6., 2., 4.], [1., 1., 1., 1.]])
    >>> perm = fit_layout(x, line(4))
    >>> x[0, perm].tolist() in ([0., 1., 2., 3.], [3., 2., 1., 0.])  # in order, either way
    True
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Data

from gsr_pyg._validation import (
    check_bool,
    check_finite,
    check_int,
    check_positive,
    check_tensor,
    closest_names,
    describe,
)
from gsr_pyg.capture import masked_samples, neuron_axis
from gsr_pyg.hookable import expose_activation
from gsr_pyg.learn import CoactivationStats
from gsr_pyg.spectral import graph_tensors, work_dtype

if TYPE_CHECKING:
    import scipy.sparse as sp

__all__ = [
    "LayoutResult",
    "MLPPair",
    "apply_layout",
    "check_permutation",
    "fit_layout",
    "layout_energy",
    "mlp_pairs",
    "permute_hidden",
    "random_layout_energy",
    "coactivation_distances",
]

# Rows of activations turned into second moments at a time (bounds the float64 copy).
_ROW_CHUNK = 8192
# Neighbours of each unit in the similarity graph behind the spectral embedding.
_EMBEDDING_NEIGHBOURS = 10
# Below this many units the embedding's eigenvectors come from a dense decomposition.
_DENSE_EIGEN_MAX = 600
# Units re-assigned together by one linear assignment of the refinement (a 512 x 512
# assignment takes about 10 ms on one core; the cost matrix grows as the square).
_BLOCK_SIZE = 512
# Cells of the initial assignment matched exactly (see _bisection_assignment).
_LEAF_SIZE = 256
_SCREEN_LEAF_SIZE = 64  # the same for screening the orientations
# Rotations tried per embedding before the assignment, evenly spaced in [0, 90 degrees).
_ANGLES = 6
# Rounds in a row whose gain is below ``tol`` before the refinement stops (each round draws
# a new independent set, so one poor round does not mean that no move is left).
_PATIENCE = 3


class LayoutResult(NamedTuple):
    r"""What :func:`fit_layout` found (with ``return_energy=True``).

    Attributes:
        perm: ``[N]`` long, ``perm[node] = unit``.
        energy: :math:`E(\pi)` of ``perm``.
        energy_original: :math:`E` of the original order (``perm = arange(N)``).
        energy_random: :math:`E_\text{random}`, the exact mean over uniformly random
            placements.
        energy_assigned: :math:`E` after the spectral assignment, before the refinement.
        rounds: refinement rounds run.
    """

    perm: Tensor
    energy: float
    energy_original: float
    energy_random: float
    energy_assigned: float
    rounds: int

    @property
    def ratio(self) -> float:
        """``energy / energy_random``: the expected smoothness ratio of the placed units
        (``nan`` when every placement has zero energy)."""
        return _ratio(self.energy, self.energy_random)

    @property
    def ratio_original(self) -> float:
        """``energy_original / energy_random``: the same for the original order."""
        return _ratio(self.energy_original, self.energy_random)


def _ratio(energy: float, baseline: float) -> float:
    return energy / baseline if baseline > 0 else math.nan


# --------------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------------


def _check_activations(activations, node_dim: int, mask: Tensor | None) -> Tensor:
    """``[samples, units]`` rows of ``activations`` (the real ones under ``mask``), checked."""
    check_tensor(activations, "activations", floating=True)
    if activations.dim() < 2:
        raise ValueError(f"activations must have a sample axis and a unit axis ([samples, "
                         f"units], [B, T, units], ...), got {describe(activations)}")
    neuron_axis(activations, node_dim, "activations")
    rows = masked_samples(activations, node_dim, mask)
    if rows.size(0) == 0 or rows.size(1) == 0:
        raise ValueError(f"activations must hold at least one sample and one unit, got "
                         f"{describe(activations)}")
    return check_finite(rows.detach(), "activations")


def _moments_from_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``[N]`` and population covariance ``[N, N]`` of ``[S, N]`` rows, in float64
    (float32 on MPS), taken in chunks of rows."""
    dtype = work_dtype(rows.device)
    count = rows.size(0)
    mean = torch.zeros(rows.size(1), dtype=dtype, device=rows.device)
    for chunk in rows.split(_ROW_CHUNK):
        mean += chunk.to(dtype).sum(dim=0)
    mean /= count
    covariance = torch.zeros(rows.size(1), rows.size(1), dtype=dtype, device=rows.device)
    for chunk in rows.split(_ROW_CHUNK):
        centred = chunk.to(dtype) - mean
        covariance.addmm_(centred.T, centred)
    return mean, covariance / count


def _moments_from_stats(stats: CoactivationStats) -> tuple[Tensor, Tensor]:
    state = stats.state_dict()
    count = float(state["count"])
    if not count > 0:
        raise ValueError(f"activations_or_stats is a CoactivationStats that has seen no "
                         f"sample (count={count:g}); call update() with activations first")
    m2 = check_finite(state["m2"], "the accumulated statistics (non-finite activations?)")
    return state["mean"], m2 / count


def coactivation_distances(activations_or_stats: Tensor | CoactivationStats, *,
                           node_dim: int = 1, mask: Tensor | None = None) -> Tensor:
    r"""The ``[N, N]`` matrix :math:`D_{uv} = \frac1S \sum_s (a_{su} - a_{sv})^2`: how much
    units :math:`u` and :math:`v` differ, on average over the samples.

    Computed as :math:`D_{uv} = (\mu_u - \mu_v)^2 + C_{uu} + C_{vv} - 2 C_{uv}` from the mean
    :math:`\mu` and the population covariance :math:`C` (the same as
    :math:`M_{uu} + M_{vv} - 2 M_{uv}` from the second moments, without the cancellation
    when the means are large), in float64 on the device of the input. Symmetric, zero on
    the diagonal, ``>= 0``.

    Args:
        activations_or_stats: activations with the units on axis ``node_dim`` and every
            other axis a sample axis (``[S, N]``, ``[B, T, N]`` with ``node_dim=-1``,
            ``[B, C, H, W]`` ...), or a :class:`gsr_pyg.learn.CoactivationStats` that
            accumulated them over many batches (its samples weigh as it weighs them).
        node_dim (int): the axis of the activations that holds the units. (default: ``1``)
        mask (Tensor, optional): a boolean mask over the sample axes of the activations
            (e.g. an ``attention_mask``): only the real positions count. Not with
            statistics.

    Example:
        >>> coactivation_distances(torch.tensor([[0., 1., 3.], [0., 1., 1.]]))
        tensor([[0., 1., 5.],
                [1., 0., 2.],
                [5., 2., 0.]], dtype=torch.float64)
    """
    if isinstance(activations_or_stats, CoactivationStats):
        if mask is not None:
            raise ValueError("mask applies to activations; a CoactivationStats has already "
                             "kept the samples it was given (apply the mask before update())")
        mean, covariance = _moments_from_stats(activations_or_stats)
    elif isinstance(activations_or_stats, Tensor):
        mean, covariance = _moments_from_rows(
            _check_activations(activations_or_stats, node_dim, mask))
    else:
        raise TypeError(f"activations_or_stats must be a tensor of activations or a "
                        f"gsr_pyg.learn.CoactivationStats, got {describe(activations_or_stats)}")
    variance = covariance.diagonal()
    distances = (mean[:, None] - mean[None, :]).square() + variance[:, None] \
        + variance[None, :] - 2 * covariance
    distances = (distances + distances.T) / 2  # BLAS products are not exactly symmetric
    distances.clamp_(min=0.0).fill_diagonal_(0.0)
    return distances


def check_permutation(perm, num_units: int, name: str = "perm") -> Tensor:
    """A permutation of ``range(num_units)``, checked: a 1-D integer tensor of that length
    holding every unit once. Returns it as a ``torch.int64`` tensor.

    Example:
        >>> check_permutation(torch.tensor([2, 0, 1]), 3)
        tensor([2, 0, 1])
        >>> check_permutation(torch.tensor([2, 0, 2]), 3)
        Traceback (most recent call last):
            ...
        ValueError: perm must be a permutation of range(3) (every unit once): unit 2 ...
    """
    check_int(num_units, "num_units", minimum=0)
    if not isinstance(perm, Tensor):
        raise TypeError(f"{name} must be a 1-D torch.int64 tensor (perm[node] = unit), got "
                        f"{describe(perm)}")
    if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor (torch.int64), got {describe(perm)}")
    if perm.dim() != 1 or perm.numel() != num_units:
        raise ValueError(f"{name} must have shape [{num_units}] (one unit per node), got "
                         f"{describe(perm)}")
    perm = perm.long()
    if num_units == 0:
        return perm
    low, high = int(perm.min()), int(perm.max())
    if low < 0 or high >= num_units:
        bad = low if low < 0 else high
        raise ValueError(f"{name} must hold units in [0, {num_units}), got {bad}")
    counts = torch.bincount(perm, minlength=num_units)
    if bool((counts != 1).any()):
        repeated = int(torch.nonzero(counts > 1)[0])
        missing = int(torch.nonzero(counts == 0)[0])
        raise ValueError(
            f"{name} must be a permutation of range({num_units}) (every unit once): unit "
            f"{repeated} appears {int(counts[repeated])} times, unit {missing} is missing"
        )
    return perm


def _check_distances(distances, num_nodes: int) -> Tensor:
    check_tensor(distances, "distances", ndim=2, floating=True)
    if distances.shape != (num_nodes, num_nodes):
        raise ValueError(f"distances must be [{num_nodes}, {num_nodes}] for a graph of "
                         f"{num_nodes} nodes (from coactivation_distances), got "
                         f"{describe(distances)}")
    return check_finite(distances, "distances")


def _undirected_edges(graph: Data, name: str = "graph") -> tuple[int, Tensor, Tensor, Tensor]:
    """``(N, source, target, weight)`` of a checked graph, each undirected edge once."""
    num_nodes, edge_index, edge_weight = graph_tensors(graph, name)
    upper = edge_index[0] < edge_index[1]
    return num_nodes, edge_index[0, upper], edge_index[1, upper], edge_weight[upper]


def layout_energy(distances: Tensor, graph: Data, perm: Tensor | None = None) -> float:
    r"""The energy :math:`E(\pi) = \sum_{\{i,j\}} w_{ij} D_{\pi_i \pi_j}` of placing unit
    ``perm[i]`` on node ``i`` (the original order when ``perm`` is None): the mean over
    samples of the Dirichlet energy of the placed activations.

    Args:
        distances (Tensor): ``[N, N]`` from :func:`coactivation_distances`.
        graph (Data): the neuron graph, ``N`` nodes.
        perm (Tensor, optional): ``[N]``, ``perm[node] = unit``. (default: ``arange(N)``)

    Example:
        >>> from gsr_pyg.graphs import line
        >>> D = coactivation_distances(torch.tensor([[0., 3., 1.]]))
        >>> layout_energy(D, line(3)), layout_energy(D, line(3), torch.tensor([0, 2, 1]))
        (13.0, 5.0)
    """
    num_nodes, source, target, weight = _undirected_edges(graph)
    distances = _check_distances(distances, num_nodes)
    if perm is None:
        perm = torch.arange(num_nodes)
    perm = check_permutation(perm, num_nodes).to(distances.device)
    source, target = source.to(distances.device), target.to(distances.device)
    weight = weight.to(device=distances.device, dtype=distances.dtype)
    return float(distances[perm[source], perm[target]] @ weight)


def random_layout_energy(distances: Tensor, graph: Data) -> float:
    r"""The exact mean energy of a uniformly random placement,
    :math:`E_\text{random} = W \cdot \frac{1}{N(N-1)} \sum_{u \ne v} D_{uv}` with
    :math:`W` the total weight of the undirected edges (every edge joins two different
    units, each pair equally likely). 0 for a single unit.

    Example:
        >>> from gsr_pyg.graphs import line
        >>> random_layout_energy(coactivation_distances(torch.tensor([[0., 3., 1.]])), line(3))
        9.333333333333334
    """
    num_nodes, _, _, weight = _undirected_edges(graph)
    distances = _check_distances(distances, num_nodes)
    if num_nodes < 2:
        return 0.0
    pair_mean = (distances.sum() - distances.diagonal().sum()) / (num_nodes * (num_nodes - 1))
    return float(weight.sum()) * float(pair_mean)


# --------------------------------------------------------------------------------------------
# the search: spectral assignment, then refinement
# --------------------------------------------------------------------------------------------


def _rank_coordinates(points: np.ndarray) -> np.ndarray:
    """Every column replaced by its ranks scaled to [0, 1] (ties share their mean rank): a
    monotone warp of each axis, so that embeddings of different scale and curvature can be
    matched point to point."""
    n = points.shape[0]
    ranked = np.zeros(points.shape)
    if n < 2:
        return ranked
    for axis, column in enumerate(points.T):
        order = np.argsort(column, kind="stable")
        starts_group = np.r_[True, column[order][1:] != column[order][:-1]]
        starts = np.flatnonzero(starts_group)
        ends = np.r_[starts[1:], n]
        ranked[order, axis] = ((starts + ends - 1) / 2)[np.cumsum(starts_group) - 1]
    return ranked / (n - 1)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def _top_eigenvectors(matrix, k: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest eigenpairs of a symmetric matrix (dense or sparse), in any order:
    Lanczos (ARPACK, seeded start) above ``_DENSE_EIGEN_MAX`` rows, else (or when ARPACK
    does not converge, which a nearly degenerate top of the spectrum can cause) a dense
    decomposition."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = matrix.shape[0]
    if n > _DENSE_EIGEN_MAX:
        try:
            return eigsh(matrix, k=k, which="LA", v0=rng.uniform(0.5, 1.5, n),
                         maxiter=50 * n, tol=1e-8)
        except ArpackNoConvergence:
            pass
    dense = matrix.toarray() if sp.issparse(matrix) else matrix
    values, vectors = np.linalg.eigh(dense)
    return values[-k:], vectors[:, -k:]


def _spectral_coordinates(adjacency: sp.csr_matrix, dims: int,
                          rng: np.random.Generator) -> np.ndarray:
    r"""Laplacian eigenmaps: the eigenvectors :math:`2..\text{dims}+1` of the random-walk
    Laplacian of ``adjacency`` (from the symmetric normalised one, :math:`\mathbf{u} =
    \mathbf{D}^{-1/2}\mathbf{v}`), ``[n, dims]``; isolated nodes sit at 0."""
    import scipy.sparse as sp

    n = adjacency.shape[0]
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    # I + D^-1/2 A D^-1/2 has the spectrum 2 - lambda(L_sym) in [0, 2]: its largest
    # eigenvectors are the smallest of L_sym
    shifted = sp.identity(n, format="csr") + sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)
    values, vectors = _top_eigenvectors(shifted, min(dims + 1, n), rng)
    order = np.argsort(-values, kind="stable")
    coordinates = vectors[:, order[1:]] * inv_sqrt[:, None]
    if coordinates.shape[1] < dims:
        coordinates = np.pad(coordinates, ((0, 0), (0, dims - coordinates.shape[1])))
    return coordinates


def _principal_coordinates(distances: np.ndarray, dims: int,
                           rng: np.random.Generator) -> np.ndarray:
    r"""Classical multidimensional scaling of :math:`D` (squared distances): the top
    ``dims`` eigenvectors of :math:`B = -\tfrac12 J D J` (:math:`J` the centring matrix),
    i.e. the units' principal components over the samples, scaled by
    :math:`\sqrt{\lambda}`. Where the units lie on a flat sheet this recovers it exactly;
    the eigenmaps recover bent ones."""
    n = distances.shape[0]
    gram = -0.5 * (distances - distances.mean(axis=0) - distances.mean(axis=1)[:, None]
                   + distances.mean())
    wanted = min(dims, n - 1)
    values, vectors = _top_eigenvectors(gram, wanted, rng)
    order = np.argsort(-values, kind="stable")
    coordinates = vectors[:, order] * np.sqrt(np.maximum(values[order], 0.0))
    return np.pad(coordinates, ((0, 0), (0, dims - wanted)))


def _similarity_graph(distances: np.ndarray) -> sp.csr_matrix:
    r"""The units' co-activation graph: every unit joined to its ``k`` nearest units by
    :math:`w_{uv} = \exp(-D_{uv} / (\sigma_u \sigma_v))`, :math:`\sigma_u^2` the distance
    to the ``k``-th one (self-tuning bandwidths), symmetrised by the maximum."""
    import scipy.sparse as sp

    n = distances.shape[0]
    k = min(_EMBEDDING_NEIGHBOURS, n - 1)
    masked = distances.copy()
    np.fill_diagonal(masked, np.inf)
    neighbours = np.argpartition(masked, k - 1, axis=1)[:, :k]
    near = np.take_along_axis(masked, neighbours, axis=1)
    sigma = np.sqrt(np.maximum(near.max(axis=1), np.finfo(float).tiny))
    weight = np.exp(-near / (sigma[:, None] * sigma[neighbours]))
    rows = np.repeat(np.arange(n), k)
    graph = sp.csr_matrix((weight.ravel(), (rows, neighbours.ravel())), shape=(n, n))
    return graph.maximum(graph.T).tocsr()


def _whiten(points: np.ndarray) -> np.ndarray:
    """``points`` centred and linearly transformed to unit covariance (directions of zero
    variance stay 0): an affine image of a square lattice becomes a rotated square lattice."""
    centred = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred / max(points.shape[0], 1))
    scale = np.where(values > 1e-12 * max(values.max(initial=0.0), 1e-300),
                     1 / np.sqrt(np.maximum(values, 1e-300)), 0.0)
    return centred @ vectors * scale


def _orientations(points: np.ndarray):
    """Rank coordinates of 2-D ``points`` in every orientation tried: whitened, rotated by
    each of ``_ANGLES`` angles in [0, 90 degrees), then ranked per axis, in the 8
    symmetries of the unit square (axis swap, reflections)."""
    white = _whiten(points)
    for angle in np.arange(_ANGLES) * (np.pi / 2) / _ANGLES:
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        ranked = _rank_coordinates(white @ rotation)
        for swap in (False, True):
            base = ranked[:, ::-1] if swap else ranked
            for flip_x in (False, True):
                for flip_y in (False, True):
                    yield np.stack([1 - base[:, 0] if flip_x else base[:, 0],
                                    1 - base[:, 1] if flip_y else base[:, 1]], axis=1)


def _bisection_assignment(node_points: np.ndarray, nodes: np.ndarray, units: np.ndarray,
                          leaf_size: int) -> np.ndarray:
    """``perm`` matching ``units`` (``[N, 2]`` coordinates) to ``nodes`` (``[N, 2]``, the
    same frame): both sets are split in halves by the same coordinate, the one along which
    the nodes (in ``node_points``) spread most, recursively, and cells of at most
    ``leaf_size`` are matched by an exact linear assignment on squared distances. A
    transport plan in O(N log N) plus small assignments (one assignment of 4,096 points
    takes seconds, 16 of 256 a tenth of a second)."""
    from scipy.optimize import linear_sum_assignment

    perm = np.empty(nodes.shape[0], dtype=np.int64)
    cells = [(np.arange(nodes.shape[0]), np.arange(units.shape[0]))]
    while cells:
        node_ids, unit_ids = cells.pop()
        if node_ids.size <= leaf_size:
            _, chosen = linear_sum_assignment(
                _squared_distances(nodes[node_ids], units[unit_ids]))
            perm[node_ids] = unit_ids[chosen]
            continue
        spread = np.ptp(node_points[node_ids], axis=0)
        axis = int(np.argmax(spread))
        node_ids = node_ids[np.argsort(nodes[node_ids, axis], kind="stable")]
        unit_ids = unit_ids[np.argsort(units[unit_ids, axis], kind="stable")]
        half = node_ids.size // 2
        cells += [(node_ids[:half], unit_ids[:half]), (node_ids[half:], unit_ids[half:])]
    return perm


class _Search:
    """The state of one layout search: ``D`` and the graph as numpy arrays, ``perm``."""

    def __init__(self, distances: np.ndarray, num_nodes: int, source: np.ndarray,
                 target: np.ndarray, weight: np.ndarray, rng: np.random.Generator):
        import scipy.sparse as sp

        self.distances = distances
        self.source, self.target, self.weight = source, target, weight
        both = (np.concatenate([source, target]), np.concatenate([target, source]))
        self.adjacency = sp.csr_matrix((np.concatenate([weight, weight]), both),
                                       shape=(num_nodes, num_nodes))
        self.rng = rng
        self.perm = np.arange(num_nodes)
        # moves that gain less than this are float noise: taking them could cycle
        self.eps = 1e-12 * max(float(distances.max(initial=0.0)) * float(weight.sum()), 1e-300)

    def energy(self, perm: np.ndarray | None = None) -> float:
        perm = self.perm if perm is None else perm
        return float(self.distances[perm[self.source], perm[self.target]] @ self.weight)

    # ---- initial assignment ------------------------------------------------------------
    def assign(self, node_points: np.ndarray) -> None:
        """Place the units by assigning each of their two embeddings to ``node_points`` in
        every orientation (cells of ``_SCREEN_LEAF_SIZE``), then the best orientation again
        with cells of ``_LEAF_SIZE``; keep the best energy (the original order included)."""
        nodes = _rank_coordinates(node_points)
        best, best_energy, best_units = self.perm, self.energy(), None
        for embedding in (_spectral_coordinates(_similarity_graph(self.distances), 2, self.rng),
                          _principal_coordinates(self.distances, 2, self.rng)):
            for oriented in _orientations(embedding):
                perm = _bisection_assignment(node_points, nodes, oriented, _SCREEN_LEAF_SIZE)
                energy = self.energy(perm)
                if energy < best_energy:
                    best, best_energy, best_units = perm, energy, oriented
        if best_units is not None:
            perm = _bisection_assignment(node_points, nodes, best_units, _LEAF_SIZE)
            if self.energy(perm) < best_energy:
                best = perm
        self.perm = best.copy()

    # ---- refinement ----------------------------------------------------------------------
    def independent_set(self) -> np.ndarray:
        """A random maximal independent set of the graph (Luby's rounds: a node joins when
        its random priority beats every live neighbour's)."""
        n = self.perm.size
        indptr, indices = self.adjacency.indptr, self.adjacency.indices
        rows = np.repeat(np.arange(n), np.diff(indptr))
        priority = self.rng.permutation(n)
        alive, chosen = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
        while alive.any():
            lowest = np.full(n, n)
            live = alive[indices]
            np.minimum.at(lowest, rows[live], priority[indices[live]])
            joins = alive & (priority < lowest)
            chosen |= joins
            alive &= ~joins
            alive[indices[joins[rows]]] = False
        return np.flatnonzero(chosen)

    def reassign_blocks(self) -> None:
        r"""Re-place the units of random blocks of an independent set optimally.

        No two nodes of an independent set are adjacent, so with every other unit fixed the
        energy is linear in which unit sits on which of its nodes: unit :math:`a` on node
        :math:`c` costs :math:`\sum_k w_{ck} D_{a \pi_k}`, and a linear assignment gives the
        exact best re-placement of the block (every pair swap within it included)."""
        from scipy.optimize import linear_sum_assignment

        nodes = self.rng.permutation(self.independent_set())
        for block in np.array_split(nodes, max(1, math.ceil(nodes.size / _BLOCK_SIZE))):
            if block.size < 2:
                continue
            units = self.perm[block]
            # cost[c, a] = sum_k A[block_c, k] D[units_a, perm_k]
            cost = np.asarray(self.adjacency[block] @ self.distances[units][:, self.perm].T)
            _, chosen = linear_sum_assignment(cost)
            if cost[np.arange(block.size), chosen].sum() < np.trace(cost) - self.eps:
                self.perm[block] = units[chosen]

    def _local_costs(self, units: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        r""":math:`\sum_k w_{ik} D_{u \pi_k}` for every pair ``(u, i)`` of ``units``/``nodes``
        (the cost of unit ``u`` on node ``i`` with the current neighbours)."""
        indptr = self.adjacency.indptr
        counts = np.diff(indptr)[nodes]
        pair = np.repeat(np.arange(nodes.size), counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        entry = indptr[nodes][pair] + offset
        terms = self.adjacency.data[entry] * self.distances[
            units[pair], self.perm[self.adjacency.indices[entry]]]
        return np.bincount(pair, weights=terms, minlength=nodes.size)

    def _swap_gain(self, i: int, j: int, weight: float) -> float:
        """The exact energy change of swapping the units of adjacent nodes ``i`` and ``j``."""
        node = np.array([i, j])
        unit = self.perm[node]
        moved = self._local_costs(unit[::-1].copy(), node).sum()
        return float(moved - self._local_costs(unit, node).sum()
                     + 2 * weight * self.distances[unit[0], unit[1]])

    def swap_edges(self) -> None:
        r"""Swap the units of adjacent nodes where that lowers the energy: the one pair move
        that no independent set holds. The change of swapping :math:`i \sim j` is
        :math:`L(\pi_j, i) - L(\pi_i, i) + L(\pi_i, j) - L(\pi_j, j) + 2 w_{ij}
        D_{\pi_i\pi_j}` with :math:`L(u, i) = \sum_k w_{ik} D_{u\pi_k}`, O(degree); every
        edge is screened at once, then the promising swaps are re-checked one at a time
        against the current placement (earlier swaps change their neighbours)."""
        source, target = self.source, self.target
        unit_s, unit_t = self.perm[source], self.perm[target]
        change = (self._local_costs(unit_t, source) - self._local_costs(unit_s, source)
                  + self._local_costs(unit_s, target) - self._local_costs(unit_t, target)
                  + 2 * self.weight * self.distances[unit_s, unit_t])
        for edge in np.flatnonzero(change < -self.eps)[np.argsort(change[change < -self.eps],
                                                                   kind="stable")]:
            i, j = int(source[edge]), int(target[edge])
            if self._swap_gain(i, j, float(self.weight[edge])) < -self.eps:
                self.perm[[i, j]] = self.perm[[j, i]]

    def refine(self, max_rounds: int, tol: float) -> int:
        """Rounds of block re-assignment and edge swaps until ``_PATIENCE`` rounds in a row
        gain less than ``tol`` of the energy, or ``max_rounds``; returns the rounds run."""
        if self.source.size == 0:
            return 0
        energy, quiet = self.energy(), 0
        for done in range(1, max_rounds + 1):
            self.reassign_blocks()
            self.swap_edges()
            before, energy = energy, self.energy()
            quiet = quiet + 1 if before - energy <= tol * before else 0
            if quiet >= _PATIENCE:
                return done
        return max_rounds


def _node_points(graph: Data, search: _Search) -> np.ndarray:
    """The nodes' 2-D coordinates: ``graph.pos``, or the graph's own Laplacian eigenmaps."""
    if graph.pos is not None:
        return graph.pos.detach().cpu().double().numpy()
    return _spectral_coordinates(search.adjacency, 2, search.rng)


def fit_layout(activations_or_stats: Tensor | CoactivationStats, graph: Data, *,
               node_dim: int = 1, mask: Tensor | None = None, seed: int = 0,
               max_rounds: int = 200, tol: float = 1e-4,
               return_energy: bool = False) -> Tensor | LayoutResult:
    r"""Place ``N`` units on the ``N`` nodes of ``graph`` so that units that co-activate sit
    on neighbouring nodes: a permutation ``perm`` (``perm[node] = unit``) that lowers

    .. math::
        E(\pi) = \sum_{\{i,j\} \in \mathcal{E}} w_{ij} D_{\pi_i \pi_j},\qquad
        D_{uv} = \frac1S \sum_s (a_{su} - a_{sv})^2,

    the Dirichlet energy of the placed activations averaged over the samples (see the
    module's notes; ``activations[..., perm]`` has energy :math:`E(\pi)` under
    :func:`gsr_pyg.metrics.dirichlet_energy`). Apply it to a model with
    :func:`permute_hidden` or :func:`apply_layout`.

    The heuristic for this quadratic assignment problem, in three steps:

    1. **Embeddings of the units** in 2-D: the Laplacian eigenmaps of a kNN similarity
       graph over the units (:math:`k = 10`, :math:`w_{uv} = \exp(-D_{uv}/\sigma_u
       \sigma_v)`, :math:`\sigma_u^2` the distance to the 10th neighbour), which unbend
       curved sheets, and the classical multidimensional scaling of :math:`D` (the units'
       top two principal coordinates), exact for flat ones. The nodes have ``graph.pos``,
       or the eigenmaps of ``graph``'s own Laplacian when it has none.
    2. **Assignment**: each embedding is whitened and turned by 6 angles in [0, 90
       degrees); each axis of both sides is replaced by its ranks (which matches scale and
       bending); in each of the 8 symmetries of the square (96 candidates), units are
       matched to nodes by recursive bisection (both point sets halved along the nodes'
       wider axis) and :func:`scipy.optimize.linear_sum_assignment` on squared distances
       inside cells of at most 64 points; the best candidate is matched again with cells
       of 256. The lowest energy wins, the original order included, so the result is
       never worse than the original order.
    3. **Refinement**, in rounds: (a) a random maximal independent set of the graph is split
       into blocks of up to 512 nodes, and the units of each block are re-placed optimally
       by a linear assignment: with no two block nodes adjacent, the energy is linear in
       the block's placement, so the assignment is the exact best move (every pair swap
       inside the block included); (b) every edge is screened for the swap of its two
       units (exact change in O(degree)) and the swaps that lower the energy are made.
       Every move lowers :math:`E`. The rounds stop after 3 rounds in a row that gain less
       than ``tol`` of the energy, or after ``max_rounds``.

    Deterministic for a ``seed`` (it seeds the eigensolver's start and the independent
    sets). The distances are computed on the device of the input (float64); the search
    runs on the CPU (scipy). Cost: :math:`N^2` memory for :math:`D`; 4,096 units on a
    64 x 64 grid take 10 to 20 seconds on one core.

    Args:
        activations_or_stats: activations with the units on axis ``node_dim`` (every other
            axis a sample axis), or a :class:`gsr_pyg.learn.CoactivationStats` accumulated
            over many batches (see :func:`coactivation_distances`).
        graph (Data): the neuron graph, with as many nodes as there are units; its ``pos``
            (``[N, 2]``) guides the assignment when present.
        node_dim (int): the axis of the activations that holds the units. (default: ``1``)
        mask (Tensor, optional): boolean mask over the sample axes (e.g. an
            ``attention_mask``): padded positions are left out.
        seed (int): seed of the search. (default: ``0``)
        max_rounds (int): most refinement rounds; ``0`` keeps the assignment of step 2.
            (default: ``200``)
        tol (float): relative gain below which a round counts as quiet. (default: ``1e-4``)
        return_energy (bool): return a :class:`LayoutResult` (``perm`` and the energies:
            found, original order, random order, after step 2) instead of ``perm`` alone.
            (default: ``False``)

    Returns:
        ``perm``, a ``[N]`` ``torch.int64`` tensor on the input's device (or a
        :class:`LayoutResult`).

    Example (50 planar fields on a 3 x 3 sheet of units, the units shuffled):
        >>> from gsr_pyg.graphs import grid
        >>> g = torch.Generator().manual_seed(0)
        >>> row, col = torch.arange(9) // 3, torch.arange(9) % 3
        >>> slopes = torch.randn(50, 2, generator=g)
        >>> x = slopes[:, :1] * row + slopes[:, 1:] * col
        >>> shuffled = torch.randperm(9, generator=g)
        >>> result = fit_layout(x[:, shuffled], grid(3, 3), return_energy=True)
        >>> placed = shuffled[result.perm].reshape(3, 3)  # the sheet, up to a symmetry:
        >>> placed[1, 1].item(), sorted(placed[[0, 0, 2, 2], [0, 2, 0, 2]].tolist())
        (4, [0, 2, 6, 8])
        >>> round(result.ratio_original, 3), round(result.ratio, 3)
        (0.77, 0.333)
    """
    num_nodes, source, target, weight = _undirected_edges(graph)
    check_int(seed, "seed", minimum=0)
    check_int(max_rounds, "max_rounds", minimum=0)
    tol = check_positive(tol, "tol", allow_zero=True)
    check_bool(return_energy, "return_energy")
    distances = coactivation_distances(activations_or_stats, node_dim=node_dim, mask=mask)
    if distances.size(0) != num_nodes:
        raise ValueError(f"graph has {num_nodes} nodes but the activations have "
                         f"{distances.size(0)} units; a layout places one unit per node")
    device = distances.device
    search = _Search(distances.cpu().double().numpy(), num_nodes, source.cpu().numpy(),
                     target.cpu().numpy(), weight.cpu().double().numpy(),
                     np.random.default_rng(seed))
    energy_original = search.energy()
    rounds = 0
    if num_nodes > 2 and source.numel():
        search.assign(_node_points(graph, search))
    energy_assigned = search.energy()
    if num_nodes > 2 and source.numel():
        rounds = search.refine(max_rounds, tol)
    perm = torch.from_numpy(search.perm.copy()).to(device)
    if not return_energy:
        return perm
    return LayoutResult(perm, search.energy(), energy_original,
                        random_layout_energy(distances, graph), energy_assigned, rounds)


# --------------------------------------------------------------------------------------------
# applying a layout to a model
# --------------------------------------------------------------------------------------------

# Modules that act on every unit alone, the same way (so they commute with a permutation of
# the units). Dropout draws an independent mask per entry: the same distribution either way.
_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid,
    nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.Threshold, nn.LogSigmoid, nn.RReLU,
)
_PASS_THROUGH = (nn.Dropout, nn.AlphaDropout, nn.Identity)


def _is_conv1d(module: nn.Module) -> bool:
    """Hugging Face's ``Conv1D`` (GPT-2): a linear layer whose weight is ``[in, out]``."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(weight, Tensor)
            and weight.dim() == 2 and tuple(weight.shape) == (getattr(module, "nx", None),
                                                              getattr(module, "nf", None)))


def _unit_axes(module: nn.Module, name: str) -> tuple[int, int]:
    """``(output axis, input axis)`` of ``module.weight``: ``(0, 1)`` for ``nn.Linear``,
    ``(1, 0)`` for a Hugging Face ``Conv1D``; anything else is refused."""
    if isinstance(module, nn.Linear):
        return 0, 1
    if _is_conv1d(module):
        return 1, 0
    shown = type(module).__name__ if isinstance(module, nn.Module) else describe(module)
    raise TypeError(f"{name} must be a torch.nn.Linear or a Hugging Face Conv1D (GPT-2), got "
                    f"{shown}")


def _permute_(parameter: Tensor | None, axis: int, perm: Tensor) -> None:
    """Reorder ``parameter`` (and its gradient) along ``axis`` in place: the same object."""
    if parameter is None:
        return
    for tensor in (parameter, parameter.grad):
        if tensor is not None:
            tensor.copy_(tensor.index_select(axis, perm.to(tensor.device)))


@torch.no_grad()
def permute_hidden(linear_in: nn.Module, linear_out: nn.Module, perm: Tensor) -> None:
    r"""Reorder the hidden units between two linear layers in place, leaving the composed
    function :math:`x \mapsto \text{linear\_out}(\phi(\text{linear\_in}(x)))` unchanged for
    any elementwise :math:`\phi`.

    The new unit at position ``node`` is the old unit ``perm[node]``:
    :math:`W_1 \leftarrow W_1[\pi, :]`, :math:`b_1 \leftarrow b_1[\pi]`,
    :math:`W_2 \leftarrow W_2[:, \pi]` for ``nn.Linear`` (weight ``[out, in]``); for Hugging
    Face's GPT-2 ``Conv1D`` (weight ``[in, out]``) the columns of ``c_fc.weight`` and the
    rows of ``c_proj.weight``. ``linear_out``'s bias is untouched. The parameters stay the
    same ``Parameter`` objects (their ``.grad`` is permuted along), so an optimizer still
    holds them; an optimizer's own state (e.g. Adam's moments) is not permuted: apply
    layouts before creating the optimizer.

    Raises ``TypeError`` for other modules and ``ValueError`` when the layers do not chain
    (``linear_in``'s outputs are not ``linear_out``'s inputs), are the same module, or
    ``perm`` is not a permutation of the hidden units (:func:`check_permutation`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(5, 3)
        >>> before = mlp(x)
        >>> permute_hidden(mlp[0], mlp[2], torch.tensor([2, 0, 3, 1]))
        >>> torch.allclose(mlp(x), before)
        True
    """
    out_axis, _ = _unit_axes(linear_in, "linear_in")
    _, in_axis = _unit_axes(linear_out, "linear_out")
    if linear_in is linear_out:
        raise ValueError("linear_in and linear_out are the same module; a layout permutes the "
                         "units between two different layers")
    width_in = linear_in.weight.size(out_axis)
    width_out = linear_out.weight.size(in_axis)
    if width_in != width_out:
        raise ValueError(
            f"linear_in outputs {width_in} units but linear_out takes {width_out} inputs: the "
            "layers do not chain (give the layer after linear_in's activation)"
        )
    perm = check_permutation(perm, width_in)
    _permute_(linear_in.weight, out_axis, perm)
    _permute_(linear_in.bias, 0, perm)
    _permute_(linear_out.weight, in_axis, perm)


class MLPPair(NamedTuple):
    """An MLP block found by :func:`mlp_pairs`: the names (in ``model.named_modules()``) of
    the layer that makes its hidden units and of the layer that reads them.

    Attributes:
        name: the block (the module holding both layers; for an ``nn.Sequential`` MLP, the
            first layer's name).
        linear_in: the layer whose outputs are the units (``nn.Linear`` or ``Conv1D``).
        linear_out: the layer that reads them.
        activation: the module whose output is the units after the activation, for
            :class:`gsr_pyg.capture.ActivationCapture` (``None`` when the activation is a
            plain function: see ``expose`` of :func:`mlp_pairs`, or capture ``linear_in``).
        num_units: the number of hidden units.
    """

    name: str
    linear_in: str
    linear_out: str
    activation: str | None
    num_units: int


def _linear_like(module) -> bool:
    return isinstance(module, nn.Linear) or _is_conv1d(module)


def _widths(module: nn.Module) -> tuple[int, int]:
    """``(inputs, outputs)`` of a linear-like module."""
    out_axis, in_axis = _unit_axes(module, "module")
    return module.weight.size(in_axis), module.weight.size(out_axis)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _activation_name(block: nn.Module, path: str, where: str, expose: bool) -> str | None:
    """The dotted name of the activation ``block`` holds at ``where`` when it is a module
    (after :func:`gsr_pyg.hookable.expose_activation` when ``expose``), else None."""
    holder_path, _, attribute = where.rpartition(".")
    holder = block.get_submodule(holder_path) if holder_path else block
    value = getattr(holder, attribute, None)
    if not isinstance(value, nn.Module):
        if not (expose and callable(value)):
            return None
        expose_activation(holder, attribute)
    return _join(path, where)


def _block_pair(path: str, block: nn.Module, expose: bool) -> MLPPair | None:
    """The MLP of a transformer block (PyTorch, BERT-style, GPT-2-style), or None."""
    if isinstance(block, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        names = ("linear1", "linear2", "activation")
    elif isinstance(getattr(block, "intermediate", None), nn.Module) and \
            isinstance(getattr(block, "output", None), nn.Module):
        names = ("intermediate.dense", "output.dense", "intermediate.intermediate_act_fn")
    elif isinstance(getattr(block, "c_fc", None), nn.Module) and \
            isinstance(getattr(block, "c_proj", None), nn.Module):
        names = ("c_fc", "c_proj", "act")
    else:
        return None
    try:
        first, second = block.get_submodule(names[0]), block.get_submodule(names[1])
    except AttributeError:
        return None
    if not (_linear_like(first) and _linear_like(second)) or \
            _widths(first)[1] != _widths(second)[0]:
        return None
    return MLPPair(path, _join(path, names[0]), _join(path, names[1]),
                   _activation_name(block, path, names[2], expose), _widths(first)[1])


def _sequential_pairs(path: str, sequence: nn.Sequential) -> list[MLPPair]:
    """Every ``Linear, elementwise modules..., Linear`` run among ``sequence``'s children
    (a Linear may close one pair and open the next)."""
    children = list(sequence.named_children())
    pairs = []
    for index, (first_name, first) in enumerate(children):
        if not _linear_like(first):
            continue
        activation = None
        for name, module in children[index + 1:]:
            if _linear_like(module):
                if _widths(first)[1] == _widths(module)[0]:
                    pairs.append(MLPPair(_join(path, first_name), _join(path, first_name),
                                         _join(path, name), activation, _widths(first)[1]))
                break
            if isinstance(module, _ELEMENTWISE) or (isinstance(module, nn.PReLU)
                                                    and module.num_parameters == 1):
                activation = _join(path, name)
            elif not isinstance(module, _PASS_THROUGH):
                break  # anything else may mix the units (a norm, a reshape, attention...)
    return pairs


def mlp_pairs(model: nn.Module, *, expose: bool = False) -> list[MLPPair]:
    """The MLP blocks of ``model`` whose hidden units :func:`permute_hidden` can reorder
    without changing the model's function, in ``named_modules()`` order.

    Found by structure:

    * ``nn.Sequential`` MLPs: a ``Linear``, then only elementwise activation modules
      (ReLU, GELU, Tanh, ..., a single-parameter PReLU), ``Dropout`` or ``Identity``, then
      a ``Linear`` that takes the first one's outputs (anything else between them, such as
      a norm or a reshape, may mix the units: no pair);
    * PyTorch ``TransformerEncoderLayer``/``TransformerDecoderLayer``: ``linear1`` ->
      ``linear2``, activation ``activation``;
    * Hugging Face BERT-style layers (a module holding ``intermediate`` and ``output``):
      ``intermediate.dense`` -> ``output.dense``, activation
      ``intermediate.intermediate_act_fn``;
    * GPT-2-style MLPs (a module holding ``c_fc`` and ``c_proj``, Hugging Face ``Conv1D``
      or ``Linear``): ``c_fc`` -> ``c_proj``, activation ``act``.

    Args:
        model (nn.Module): the model.
        expose (bool): turn an activation held as a plain function (PyTorch's
            ``F.relu`` in a ``TransformerEncoderLayer``) into an equivalent module with
            :func:`gsr_pyg.hookable.expose_activation`, so that every pair names a hookable
            activation; the model's outputs stay bit-for-bit the same. (default: ``False``:
            such pairs have ``activation=None`` and the model is not modified)

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 2))
        >>> mlp_pairs(model)
        [MLPPair(name='0', linear_in='0', linear_out='3', activation='1', num_units=8)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_bool(expose, "expose")
    pairs = []
    for path, module in list(model.named_modules()):
        if isinstance(module, nn.Sequential):
            pairs += _sequential_pairs(path, module)
        else:
            pair = _block_pair(path, module, expose)
            if pair is not None:
                pairs.append(pair)
    return pairs


def apply_layout(model: nn.Module, pair: MLPPair | str, perm: Tensor) -> MLPPair:
    """Reorder the hidden units of one MLP block of ``model`` in place with
    :func:`permute_hidden`: ``pair`` is an :class:`MLPPair` of :func:`mlp_pairs` or its
    ``name``. Returns the pair.

    Example:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> x = torch.randn(5, 3)
        >>> before = model(x)
        >>> apply_layout(model, "0", torch.tensor([3, 2, 1, 0])).linear_out
        '2'
        >>> torch.allclose(model(x), before)
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(pair, str):
        found = {candidate.name: candidate for candidate in mlp_pairs(model)}
        if pair not in found:
            close = closest_names(pair, found)
            hint = f"; closest: {close}" if close else f"; its MLP blocks: {sorted(found)}"
            raise ValueError(f"pair {pair!r} is not an MLP block of the model{hint}")
        pair = found[pair]
    elif not isinstance(pair, MLPPair):
        raise TypeError(f"pair must be an MLPPair from mlp_pairs(model) or its name, got "
                        f"{describe(pair)}")
    modules = dict(model.named_modules())
    for role in ("linear_in", "linear_out"):
        if getattr(pair, role) not in modules:
            raise ValueError(f"pair.{role}={getattr(pair, role)!r} is not a module of the model")
    permute_hidden(modules[pair.linear_in], modules[pair.linear_out], perm)
    return pair
