r"""Graphs over the neurons of a layer, learned from their co-activations.

A layer's neurons become the nodes of a graph whose edges join neurons that fire together.
Neuron :math:`i` is described by a feature vector :math:`x_i`: its activations over the
current batch (the reference) or, through :class:`CoactivationStats`, its activations over
every sample seen since the last refresh, summarised by a Gram/covariance matrix. Three
builders turn the pairwise distances :math:`d_{ij}` into a graph:

* :func:`knn_graph`: every neuron keeps its :math:`k` nearest neighbours, then the directed
  kNN adjacency is symmetrised (reference: :math:`k = 5`, weight 1 per neighbour,
  :math:`(A + A^\top)/2`);
* :func:`gaussian_graph`: :math:`w_{ij} = \exp(-d_{ij}^2/\sigma^2)`, entries below a threshold
  dropped (default :math:`\sigma`: the median distance to the 5 nearest neighbours;
  reference: :math:`\sigma = 1`, threshold 0.1);
* :func:`adaptive_graph`: :math:`K_{ij} = \exp(-d_{ij}^2/\sigma_i^2)` with :math:`\sigma_i` the
  distance from :math:`i` to its :math:`k`-th neighbour (reference: :math:`k = 2`), symmetrised
  :math:`(K + K^\top)/2`.

:func:`from_positions` applies the same builders (and a radius rule) to node coordinates
instead of activations: the graph of a "cortical sheet" of any shape.

Distances (``metric``), for neuron features :math:`x_i, x_j`:

* ``"euclidean"``: :math:`d_{ij} = \lVert x_i - x_j \rVert`;
* ``"cosine"``: :math:`d_{ij} = 1 - \cos(x_i, x_j)` (scikit-learn's cosine distance; an
  all-zero neuron has similarity 0 with every other neuron, as in scikit-learn);
* ``"correlation"``: :math:`d_{ij} = 1 - r_{ij}`, with :math:`r_{ij}` the Pearson correlation
  over the samples (scipy's/scikit-learn's correlation distance; constant neurons raise).

Every output follows the package's data model: ``edge_index`` ``[2, E]`` long with both
directions of every edge, coalesced, no self-loops; ``edge_weight`` ``[E]`` float32, positive
(a weight that underflows to 0 is no edge) and symmetric; ``num_nodes``; and ``x``
(``[neurons, samples]``, the neuron features) when the graph was built from activations.

Memory: distances are computed for a band of about ``chunk_size`` rows at a time, never as a
full ``neurons x neurons`` matrix: bands of about 8 MB of distances, at least one tile of 256
rows (a 65,536-wide layer builds its kNN graph in bands of 64 MB). The Gaussian and adaptive
graphs keep every pair above the threshold, which is dense for small thresholds: use them on
layers of a few thousand neurons. Time: the distance matrix is symmetric, so only its tiles on
and above the diagonal are computed (about half of one ``x @ x.T``), each serving the rows of
both of its neurons. Results do not depend on ``chunk_size``: the matrix products behind the
distances are always taken on the same aligned ``256 x 256`` tiles (BLAS rounds differently
for differently shaped products), so every distance is bitwise the same whatever the
banding, and the transcendental functions run once on the final edge list.

Example::

    >>> acts = torch.randn(32, 64)                # a batch of 32 samples, 64 neurons
    >>> g = knn_graph(acts, k=5)                  # the reference learned graph
    >>> g.num_nodes, bool((g.edge_weight > 0).all())
    (64, True)
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform
from torch_geometric.utils import coalesce

from gsr_pyg._validation import (
    check_finite,
    check_int,
    check_positive,
    check_tensor,
    closest_names,
    describe,
)

__all__ = [
    "CoactivationGraph",
    "CoactivationStats",
    "adaptive_graph",
    "from_positions",
    "gaussian_graph",
    "knn_graph",
]

METRICS = ("euclidean", "cosine", "correlation")
WEIGHTS = ("connectivity", "gaussian")
SYMMETRIZE = ("mean", "max", "mutual")
METHODS = ("knn", "gaussian", "adaptive")
FEATURES = ("batch", "stats")
STATS_MODES = ("exact", "ema")

# Distances are computed in square tiles of this many neurons (the last one zero-padded), so
# every matrix product has the same shape whatever the banding: BLAS libraries round
# differently at the edges of differently shaped products. 256 x 256 products run at the
# speed of one large product on one core.
_TILE = 256
# Default chunk: the [chunk, neurons] band of distances stays below this many bytes (or one
# tile of rows). Larger bands gain nothing: every pair is computed once whatever the banding.
_CHUNK_BYTES = 8 * 2**20
# A neuron whose spread over the samples is below this many machine epsilons of its
# magnitude is constant: centring it leaves only rounding noise.
_CONSTANT_EPS = 16
# Candidate pairs are preselected on squared distance with this relative slack; the exact
# threshold is then applied to the final weights, so the slack only costs a few candidates.
_CUTOFF_SLACK = 1e-4
_MAX_LISTED = 5
# gaussian_graph's default sigma: the median distance to this many nearest neighbours (the
# reference kNN graph's k).
_SIGMA_NEIGHBOURS = 5


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------

def _metric_arg(metric) -> str:
    if metric not in METRICS:
        hint = closest_names(str(metric), METRICS)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"metric must be one of {METRICS}, got {describe(metric)}{extra}")
    return metric


def _choice_arg(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        hint = closest_names(str(value), choices)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ValueError(f"{name} must be one of {choices}, got {describe(value)}{extra}")
    return value


def _chunk_arg(chunk_size) -> int | None:
    if chunk_size is None:
        return None
    return check_int(chunk_size, "chunk_size", minimum=1)


def _threshold_arg(threshold) -> float:
    threshold = check_positive(threshold, "threshold", allow_zero=True)
    if threshold >= 1.0:
        raise ValueError(f"threshold must be in [0, 1) (weights are at most 1), got {threshold}")
    return threshold


def _k_arg(k, num_nodes: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k must be an int, got {describe(k)}")
    if not 1 <= k <= num_nodes - 1:
        raise ValueError(
            f"k must be between 1 and num_neurons - 1 = {num_nodes - 1} (a neuron is not its "
            f"own neighbour), got k={k} for {num_nodes} neurons"
        )
    return k


def _raise_constant(mask: Tensor, why: str) -> None:
    """Raise if any neuron is constant; the message counts them and lists the first few."""
    if bool(mask.any()):
        index = mask.nonzero().flatten()
        listed = index[:_MAX_LISTED].tolist()
        more = ", ..." if index.numel() > _MAX_LISTED else ""
        raise ValueError(
            f"{why} needs neurons that vary over the samples, but {index.numel()} of "
            f"{mask.numel()} neurons are constant (indices {listed}{more}); drop them or "
            f"use metric='euclidean' without standardize"
        )


def _constant_features(features: Tensor) -> Tensor:
    """[N] mask of neurons (rows of ``features``) whose values do not vary."""
    spread = features.amax(dim=1) - features.amin(dim=1)
    scale = features.abs().amax(dim=1)
    return spread <= _CONSTANT_EPS * torch.finfo(features.dtype).eps * scale


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    # half precision cannot hold squared distances of ordinary activations
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _check_activations(activations) -> Tensor:
    """Validate [samples, neurons] activations; return neuron features [neurons, samples]."""
    check_tensor(activations, "activations", ndim=2, floating=True)
    samples, neurons = activations.shape
    if samples < 2:
        raise ValueError(
            f"activations must be [samples, neurons] with at least 2 samples (each neuron is "
            f"described by its activations over the samples), got {describe(activations)}"
        )
    if neurons < 1:
        raise ValueError(f"activations must have at least 1 neuron, got {describe(activations)}")
    check_finite(activations, "activations")
    features = activations.detach().t()
    # one contiguous layout, so every row block goes through the same BLAS call
    return features.to(_work_dtype(features.dtype)).contiguous()


def _check_gram(gram) -> Tensor:
    check_tensor(gram, "gram", ndim=2, floating=True)
    if gram.shape[0] != gram.shape[1] or gram.shape[0] < 1:
        raise ValueError(f"gram must be a square [neurons, neurons] matrix, got {describe(gram)}")
    check_finite(gram, "gram")
    gram = gram.detach()
    return gram.to(_work_dtype(gram.dtype))


# --------------------------------------------------------------------------------------------
# squared distances, one band of rows at a time
# --------------------------------------------------------------------------------------------

class _FeatureDistances:
    r"""Squared metric distances from neuron features ``[N, F]``, in bands of rows.

    Euclidean: :math:`d_{ij}^2 = \max(0, (\lVert x_i\rVert^2 + \lVert x_j\rVert^2) -
    2 x_i^\top x_j)`. Cosine/correlation: :math:`d_{ij} = 1 - u_i^\top u_j` with :math:`u` the
    unit (and, for correlation, centred) features, clamped to [0, 2], then squared.

    The distance matrix is symmetric, so only the tiles on and above the diagonal are computed
    (a ``[T, F] @ [F, T]`` product each, with the add and clamp on the tile while it is in the
    cache); a tile below the diagonal is the transpose of its mirror, so both rows of a pair
    see bitwise the same distance. Every product has the same shape (the features are
    zero-padded to whole tiles), so the distances do not depend on how rows are banded.
    """

    def __init__(self, features: Tensor, metric: str) -> None:
        self.metric = metric
        if metric == "correlation":
            features = features - features.mean(dim=1, keepdim=True)
        if metric != "euclidean":
            norm = features.norm(dim=1, keepdim=True)
            # zero vectors stay zero: similarity 0 with everything (scikit-learn's convention)
            features = features / torch.where(norm > 0, norm, torch.ones_like(norm))
        n = features.shape[0]
        self.num_nodes = n
        self.tile = n if n <= _TILE else _TILE
        self.padded = -(-n // self.tile) * self.tile
        if self.padded > n:
            features = torch.cat([features, features.new_zeros(self.padded - n,
                                                                features.shape[1])])
        self.features = features
        if metric == "euclidean":
            self.sq_norm = (features * features).sum(dim=1)
        self.dtype = features.dtype
        self.device = features.device

    def band_rows(self, chunk_rows: int) -> int:
        """Rows per band: whole tiles, so every band reuses the same products."""
        return min(self.padded, -(-chunk_rows // self.tile) * self.tile)

    def memory(self, band_rows: int, spill: bool) -> Tensor:
        """One allocation for the largest band (the first) and the rows below it."""
        end = self.padded
        size = band_rows * end + (band_rows * (end - band_rows) if spill else 0)
        return torch.empty(size, dtype=self.dtype, device=self.device)

    def _tile(self, i0: int, j0: int, out: Tensor) -> None:
        """The ``[T, T]`` tile of rows ``i0..`` and columns ``j0..``, written into ``out``."""
        t = self.tile
        a, b = self.features[i0:i0 + t], self.features[j0:j0 + t]
        if self.metric == "euclidean":
            torch.add(self.sq_norm[i0:i0 + t, None], self.sq_norm[None, j0:j0 + t], out=out)
            torch.addmm(out, a, b.t(), alpha=-2.0, out=out)
            out.clamp_(min=0.0)
        else:
            out.fill_(1.0)  # d = 1 - u_i.u_j
            torch.addmm(out, a, b.t(), alpha=-1.0, out=out)
            out.clamp_(0.0, 2.0)
            out.mul_(out)

    def band(self, start: int, stop: int, spill: bool,
             memory: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(upper, lower)`` for the rows ``start..stop`` (whole tiles): ``upper`` holds their
        distances to the columns ``start..`` (``[stop - start, padded - start]``; padding
        columns are ``inf``), ``lower`` (when ``spill``) the distances of the rows ``stop..``
        to the columns ``start..stop`` (``[padded - stop, stop - start]``). Both are views of
        ``memory`` (see :func:`_bands`)."""
        t, end = self.tile, self.padded
        size = (stop - start) * (end - start)
        upper = memory[:size].view(stop - start, end - start)
        lower = None
        if spill and stop < end:
            lower = memory[size:size + (end - stop) * (stop - start)].view(end - stop,
                                                                           stop - start)
        scratch = torch.empty(t, t, dtype=self.dtype, device=self.device)
        for i0 in range(start, stop, t):
            for j0 in range(i0, end, t):
                # computed in a contiguous tile that stays in the cache for both copies
                self._tile(i0, j0, scratch)
                upper[i0 - start:i0 - start + t, j0 - start:j0 - start + t].copy_(scratch)
                if j0 == i0:
                    continue
                mirror = scratch.t()  # the tile of the rows j0.. and the columns i0..
                if j0 < stop:
                    upper[j0 - start:j0 - start + t, i0 - start:i0 - start + t].copy_(mirror)
                elif lower is not None:
                    lower[j0 - stop:j0 - stop + t, i0 - start:i0 - start + t].copy_(mirror)
        if end > self.num_nodes:
            upper[:, self.num_nodes - start:] = math.inf
        return upper, lower


class _GramDistances:
    r"""Squared metric distances from a Gram matrix :math:`G_{ij} = x_i^\top x_j`.

    Euclidean: :math:`d_{ij}^2 = G_{ii} + G_{jj} - 2 G_{ij}`; cosine/correlation:
    :math:`d_{ij} = 1 - G_{ij} / \sqrt{G_{ii} G_{jj}}` (for correlation ``G`` must be the Gram
    matrix of centred features, e.g. a covariance). Elementwise, so no eigendecomposition and
    no banding effects; every row reads its own row of ``G``.
    """

    def __init__(self, gram: Tensor, metric: str) -> None:
        self.metric = metric
        self.gram = gram
        self.diag = gram.diagonal().clone()
        if metric == "correlation":
            _raise_constant(self.diag <= 0, "metric='correlation'")
        if metric != "euclidean":
            self.inv_norm = torch.where(self.diag > 0, self.diag.clamp(min=0).rsqrt(),
                                        torch.zeros_like(self.diag))
        self.num_nodes = self.padded = gram.shape[0]
        self.dtype = gram.dtype
        self.device = gram.device

    def band_rows(self, chunk_rows: int) -> int:
        return min(self.num_nodes, chunk_rows)

    def memory(self, band_rows: int, spill: bool) -> None:
        return None  # elementwise: every band is a new tensor

    def _d2(self, rows: slice, cols: slice) -> Tensor:
        block = self.gram[rows, cols]
        if self.metric == "euclidean":
            d2 = (self.diag[rows, None] + self.diag[None, cols]) + block * -2.0
            return d2.clamp_(min=0.0)
        sim = (block * self.inv_norm[rows, None]) * self.inv_norm[None, cols]
        d2 = torch.rsub(sim, 1.0).clamp_(0.0, 2.0)
        return d2.mul_(d2)

    def band(self, start: int, stop: int, spill: bool,
             memory: None) -> tuple[Tensor, Tensor | None]:
        upper = self._d2(slice(start, stop), slice(start, None))
        lower = None
        if spill and stop < self.num_nodes:
            lower = self._d2(slice(stop, None), slice(start, stop))
        return upper, lower


def _distances(activations, gram, metric: str):
    """The distance provider for exactly one of ``activations`` / ``gram``; and ``x``."""
    _metric_arg(metric)
    if (activations is None) == (gram is None):
        raise ValueError("give exactly one of activations ([samples, neurons]) and gram "
                         f"([neurons, neurons]), got activations={describe(activations)} "
                         f"and gram={describe(gram)}")
    if gram is not None:
        return _GramDistances(_check_gram(gram), metric), None
    features = _check_activations(activations)
    if metric == "correlation":
        _raise_constant(_constant_features(features), "metric='correlation'")
    return _FeatureDistances(features, metric), activations.detach().t()


def _chunk_rows(num_nodes: int, itemsize: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        return min(chunk_size, num_nodes)
    return max(1, _CHUNK_BYTES // max(1, num_nodes * itemsize))


def _bands(provider, chunk_size: int | None, spill: bool = False):
    """Yield ``(start, upper, lower)`` for consecutive bands of rows (see ``band``): ``upper``
    cut to the band's real rows, ``lower`` (with ``spill``) to the real rows below it.

    Every band lives in one allocation made for the first (the largest): a fresh allocation
    costs a page fault per 4 KiB on first touch, about as much as computing the distances."""
    n, end = provider.num_nodes, provider.padded
    step = provider.band_rows(_chunk_rows(n, provider.dtype.itemsize, chunk_size))
    memory = provider.memory(step, spill)
    for start in range(0, n, step):
        stop = min(end, start + step)
        upper, lower = provider.band(start, stop, spill, memory)
        if lower is not None:
            lower = lower[:n - stop]
        yield start, upper[:min(stop, n) - start], lower


def _smallest(values: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``(values, positions)`` of the ``k`` smallest entries of every row of ``values``, in
    ascending position, ties going to the lower position: all strictly smaller entries, then
    the first tied ones (a cumulative count over the tie mask), whatever order ``topk``
    returns ties in. Rows shorter than ``k + 1`` are padded with ``inf`` (a position past the
    row: no entry)."""
    rows, length = values.shape
    if length <= k:
        values = torch.cat([values, values.new_full((rows, k + 1 - length), math.inf)], dim=1)
    # k + 1 values tell whether a tie straddles the k-th place
    vals, pos = torch.topk(values, k + 1, dim=1, largest=False)
    pos = pos[:, :k]
    straddle = vals[:, k - 1] == vals[:, k]
    if bool(straddle.any()):
        fix = straddle.nonzero().flatten()
        sub, kth = values[fix], vals[fix, k - 1:k]
        closer, tied = sub < kth, sub == kth
        wanted = k - closer.sum(dim=1, keepdim=True)
        keep = closer | (tied & (tied.cumsum(dim=1, dtype=torch.int32) <= wanted))
        pos[fix] = keep.nonzero(as_tuple=True)[1].view(-1, k)
    pos = pos.sort(dim=1).values
    return values.gather(1, pos), pos


def _nearest(values: Tensor, k: int, start: int, num_nodes: int) -> tuple[Tensor, Tensor]:
    """:func:`_smallest` of distances to the columns ``start..``: ``(d2, neuron index)``;
    entries past the real neurons (padding, or none at all) get index ``num_nodes`` and sort
    last in every merge (their distance is ``inf``)."""
    d, pos = _smallest(values, k)
    index = pos + start
    return d, index.masked_fill_(index >= num_nodes, num_nodes)


def _merge(best_d: Tensor, best_i: Tensor, new_d: Tensor, new_i: Tensor,
           k: int) -> tuple[Tensor, Tensor]:
    """The ``k`` nearest of two candidate lists of the same rows, where every index of the
    first is below every index of the second (so position order is index order; the
    ``inf`` placeholders of :func:`_nearest` never beat a real distance)."""
    d, i = torch.cat([best_d, new_d], dim=1), torch.cat([best_i, new_i], dim=1)
    d, pos = _smallest(d, k)
    return d, i.gather(1, pos)


def _knn_directed(provider, k: int, chunk_size: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(row, col, d2)`` of the k nearest neighbours of every neuron, self excluded, rows in
    order and each row's neighbours in index order.

    Ties at the k-th distance go to the lower neuron index (see :func:`_smallest`). Band by
    band, each row takes its k nearest among the columns from its band on; the rows below the
    band take their k nearest among the band's columns (the transposed tiles) and merge them
    with what earlier bands gave them. Columns reach a row in index order, so the merges keep
    the lower index on ties.
    """
    n = provider.num_nodes
    best_d = best_i = None  # [n, k]: each row's nearest among the columns of earlier bands
    cols, dists = [], []
    for start, upper, lower in _bands(provider, chunk_size, spill=True):
        rows = upper.shape[0]
        local = torch.arange(rows, device=upper.device)
        upper[local, local] = math.inf  # a neuron is not its own neighbour
        d, i = _nearest(upper, k, start, n)
        if best_d is None:
            best_d = torch.full((n, k), math.inf, dtype=upper.dtype, device=upper.device)
            best_i = torch.full((n, k), n, dtype=torch.long, device=upper.device)
        elif start > 0:
            d, i = _merge(best_d[start:start + rows], best_i[start:start + rows], d, i, k)
        cols.append(i.reshape(-1))
        dists.append(d.reshape(-1))
        if lower is not None and lower.shape[0]:
            below = start + rows
            if start == 0:
                best_d[below:], best_i[below:] = _nearest(lower, k, start, n)
                continue
            # only rows for which the band holds something nearer than their k-th so far:
            # a tie with it loses (the band's indices are higher), and after the first bands
            # few rows qualify, so one min per row replaces most of the selections
            hit = (lower.amin(dim=1) < best_d[below:].amax(dim=1)).nonzero().flatten()
            if hit.numel():
                at = hit + below
                best_d[at], best_i[at] = _merge(best_d[at], best_i[at],
                                                *_nearest(lower[hit], k, start, n), k)
    row = torch.arange(n, device=provider.device).repeat_interleave(k)
    return row, torch.cat(cols), torch.cat(dists)


def _kth_squared_distance(provider, k: int, chunk_size: int | None) -> Tensor:
    """``[N]`` squared distance from every neuron to its k-th nearest neighbour."""
    return _knn_directed(provider, k, chunk_size)[2].view(-1, k).amax(dim=1)


def _upper_pairs(provider, chunk_size: int | None, cutoff) -> tuple[Tensor, Tensor, Tensor]:
    """``(row, col, d2)`` of the pairs i < j with ``d2 <= cutoff`` (a scalar, or a function of
    the block's rows giving a [rows, N] bound; ``None`` keeps every pair)."""
    rows, cols, dists = [], [], []
    n = provider.num_nodes
    for start, d2, _ in _bands(provider, chunk_size):
        d2 = d2[:, :n - start]  # the columns start.. of real neurons
        local = torch.arange(d2.shape[0], device=d2.device)
        upper = torch.arange(n - start, device=d2.device)[None, :] > local[:, None]
        if cutoff is not None:
            bound = (cutoff(start, start + d2.shape[0])[:, start:] if callable(cutoff)
                     else cutoff)
            upper &= d2 <= bound
        row, col = upper.nonzero(as_tuple=True)
        rows.append(row + start)
        cols.append(col + start)
        dists.append(d2[row, col])
    return torch.cat(rows), torch.cat(cols), torch.cat(dists)


def _edge_data(edge_index: Tensor, weight: Tensor, num_nodes: int, x: Tensor | None) -> Data:
    """The graph of a coalesced, symmetric edge list: float32 weights, and no edge where the
    weight is 0 (a Gaussian weight that underflowed): a zero weight is no edge, and a
    Laplacian with ``normalization="sym"`` or the stop rule would count it as a full one."""
    weight = weight.to(torch.float32)
    keep = weight > 0
    data = Data(edge_index=edge_index[:, keep], edge_weight=weight[keep], num_nodes=num_nodes)
    if x is not None:
        data.x = x
    return data


# Up to this many neurons a graph is symmetrised in a dense N x N matrix: a handful of tensor
# operations, where sorting the edge list costs several times more per call at these sizes.
_DENSE_SYMMETRIZE_NODES = 256


def _dense_pairs(row: Tensor, col: Tensor, weight: Tensor, num_nodes: int) -> Tensor:
    """``[N, N]`` matrix with ``weight`` at the (distinct) directed entries ``(row, col)``."""
    matrix = weight.new_zeros(num_nodes, num_nodes)
    matrix[row, col] = weight
    return matrix


def _nonzero_entries(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """The entries of a symmetric matrix that are not 0, coalesced: ``(edge_index, weight)``."""
    edge_index = matrix.nonzero().t()
    return edge_index, matrix[edge_index[0], edge_index[1]]


def _to_data(row: Tensor, col: Tensor, weight: Tensor, num_nodes: int, x: Tensor | None,
             reduce: str = "sum") -> Data:
    """Both directions of the distinct directed edges ``(row, col)``, coalesced (``reduce``
    merges a pair given both ways), float32 weights > 0."""
    if num_nodes <= _DENSE_SYMMETRIZE_NODES:
        matrix = _dense_pairs(row, col, weight, num_nodes)
        matrix = matrix + matrix.t() if reduce == "sum" else torch.maximum(matrix, matrix.t())
        return _edge_data(*_nonzero_entries(matrix), num_nodes, x)
    edge_index = torch.stack([torch.cat([row, col]), torch.cat([col, row])])
    edge_index, weight = coalesce(edge_index, torch.cat([weight, weight]), num_nodes,
                                  reduce=reduce)
    return _edge_data(edge_index, weight, num_nodes, x)


def _mutual_data(row: Tensor, col: Tensor, weight: Tensor, num_nodes: int,
                 x: Tensor | None) -> Data:
    """The pairs among the distinct directed edges ``(row, col)`` given both ways, with the
    mean of their two weights (they agree up to rounding)."""
    if num_nodes <= _DENSE_SYMMETRIZE_NODES:
        picked = _dense_pairs(row, col, torch.ones_like(weight), num_nodes)
        mutual = (picked * picked.t()) > 0
        matrix = _dense_pairs(row, col, weight, num_nodes)
        matrix = (matrix + matrix.t()).where(mutual, 0.0) / 2
        edge_index = mutual.nonzero().t()
        return _edge_data(edge_index, matrix[edge_index[0], edge_index[1]], num_nodes, x)
    edge_index = torch.stack([torch.cat([row, col]), torch.cat([col, row])])
    both = torch.stack([torch.ones_like(weight).repeat(2), weight.repeat(2)], dim=1)
    edge_index, both = coalesce(edge_index, both, num_nodes, reduce="sum")
    mutual = both[:, 0] == 2
    return _edge_data(edge_index[:, mutual], both[mutual, 1] / 2, num_nodes, x)


def _warn_if_edgeless(data: Data, why: str) -> None:
    """An edgeless graph on two or more neurons is legal but rarely meant: say so."""
    if data.num_nodes >= 2 and data.edge_index.size(1) == 0:
        warnings.warn(f"the learned graph of {data.num_nodes} neurons has no edges: {why}",
                      UserWarning, stacklevel=4)  # the caller of the builder


def _median_distance(d2: Tensor) -> Tensor:
    """The default kernel width: the median of the kNN distances (squared in ``d2``), the
    lower median for an even count."""
    return d2.sqrt().median()


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def knn_graph(
    activations: Tensor | None = None,
    k: int = 5,
    metric: str = "euclidean",
    weights: str = "connectivity",
    symmetrize: str = "mean",
    sigma: float | None = None,
    chunk_size: int | None = None,
    *,
    gram: Tensor | None = None,
) -> Data:
    r"""The k-nearest-neighbour graph of the neurons of a layer.

    Each neuron :math:`i` (column ``i`` of ``activations``) picks its ``k`` nearest neurons
    under ``metric``, itself excluded, ties at the ``k``-th distance going to the lower index.
    This gives a directed adjacency :math:`A` with :math:`A_{ij} = w_{ij}` for the picked
    :math:`j`, where :math:`w_{ij} = 1` (``weights="connectivity"``) or
    :math:`w_{ij} = \exp(-d_{ij}^2/\sigma^2)` (``weights="gaussian"``; default :math:`\sigma`:
    the median of the :math:`N k` kNN distances, the lower median for an even count). Then

    * ``symmetrize="mean"``: :math:`(A + A^\top)/2` (weight 1 for mutual neighbours and 0.5
      for one-way ones with connectivity weights: the reference);
    * ``"max"``: :math:`\max(A, A^\top)` (every kNN pair, weight 1 with connectivity);
    * ``"mutual"``: only pairs that picked each other (weight :math:`w_{ij}`, 1 with
      connectivity).

    After ``mean`` or ``max`` every neuron has at least ``k`` neighbours; after ``mutual`` at
    most ``k``. A Gaussian weight that underflows to 0 in float32 (a neighbour many
    :math:`\sigma` away) is no edge: that neighbour is dropped, and a graph left without
    edges raises a ``UserWarning``. kNN rankings equal scikit-learn's ``NearestNeighbors``
    with the same metric (where scikit-learn leaves the order of ties open, the lower index
    wins here).

    Args:
        activations: ``[samples, neurons]``; each column is a neuron (at least 2 samples).
        k: neighbours per neuron, ``1 <= k <= neurons - 1`` (reference 5).
        metric: ``"euclidean"``, ``"cosine"`` (:math:`1 - \cos`) or ``"correlation"``
            (:math:`1 - r`).
        weights: ``"connectivity"`` or ``"gaussian"``.
        symmetrize: ``"mean"``, ``"max"`` or ``"mutual"``.
        sigma: kernel width for ``weights="gaussian"`` (default: median kNN distance).
        chunk_size: rows of the distance matrix held at once (default: an 8 MB band, at
            least one 256-row tile);
            the result does not depend on it.
        gram: instead of ``activations``, a ``[neurons, neurons]`` Gram matrix of the neuron
            features (centred features for ``"correlation"``), e.g. from
            :meth:`CoactivationStats.to_data`.

    Returns:
        :class:`~torch_geometric.data.Data` with ``edge_index``, ``edge_weight`` (float32),
        ``num_nodes``, ``x`` (``[neurons, samples]``, when built from activations) and
        ``sigma`` (with gaussian weights).

    Example::

        >>> acts = torch.tensor([[0., 1., 3.], [0., 1., 3.]])   # 2 samples, 3 neurons
        >>> knn_graph(acts, k=1).edge_weight      # 0 <-> 1 mutual, 2 -> 1 one-way
        tensor([1.0000, 1.0000, 0.5000, 0.5000])
    """
    provider, x = _distances(activations, gram, metric)
    n = provider.num_nodes
    k = _k_arg(k, n)
    _choice_arg(weights, "weights", WEIGHTS)
    _choice_arg(symmetrize, "symmetrize", SYMMETRIZE)
    if sigma is not None:
        if weights != "gaussian":
            raise ValueError(f"sigma is only used with weights='gaussian', got sigma={sigma!r} "
                             f"with weights={weights!r}")
        sigma = check_positive(sigma, "sigma")
    chunk_size = _chunk_arg(chunk_size)

    row, col, d2 = _knn_directed(provider, k, chunk_size)
    if weights == "connectivity":
        weight = torch.ones_like(d2)
    else:
        if sigma is None:
            sigma_t = _median_distance(d2)
            sigma = float(sigma_t)
        else:
            sigma_t = torch.tensor(sigma, dtype=d2.dtype, device=d2.device)
        sigma2 = (sigma_t * sigma_t).clamp(min=torch.finfo(d2.dtype).tiny)
        weight = torch.exp(-(d2 / sigma2))

    if symmetrize == "mutual":
        data = _mutual_data(row, col, weight, n, x)
    elif symmetrize == "mean":
        data = _to_data(row, col, weight / 2, n, x, reduce="sum")
    else:
        data = _to_data(row, col, weight, n, x, reduce="max")
    if weights == "gaussian":
        data.sigma = sigma
        _warn_if_edgeless(data, f"every Gaussian weight exp(-d^2/sigma^2) underflowed to 0 at "
                                f"sigma={sigma:g}; use sigma=None (the median kNN distance) "
                                "or a larger sigma")
    return data


@torch.no_grad()
def gaussian_graph(
    activations: Tensor | None = None,
    sigma: float | None = None,
    threshold: float = 0.1,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    *,
    gram: Tensor | None = None,
) -> Data:
    r"""The Gaussian-kernel graph :math:`w_{ij} = \exp(-d_{ij}^2 / \sigma^2)`, small weights
    dropped.

    Every pair :math:`i \ne j` with :math:`w_{ij} \ge` ``threshold`` (and :math:`w_{ij} > 0`
    in float32: a weight that underflows is no edge) becomes an edge, so neurons closer than
    :math:`\sigma\sqrt{-\ln t}` are joined (:math:`1.52\,\sigma` for :math:`t = 0.1`). The
    graph is as dense as the threshold allows (``threshold=0`` keeps every pair).

    ``sigma=None`` (the default) takes the kernel width from the data: the median of the
    distances from every neuron to its ``min(5, N - 1)`` nearest neighbours (the lower
    median for an even count; the rule of :func:`knn_graph` with gaussian weights and the
    reference :math:`k = 5`), so the graph joins neurons at the typical neighbour distance
    whatever the scale of the activations. The reference used :math:`\sigma = 1` and
    threshold 0.1 (``gaussian_graph(acts, sigma=1.0)``), which joins only neurons less than
    1.52 apart: activations whose neurons lie 16 to 36 apart (ordinary for a few dozen
    samples) give a graph without edges. A result without edges on two or more neurons
    raises a ``UserWarning`` that names the sigma that would join the closest pair.

    Args:
        activations: ``[samples, neurons]``; each column is a neuron.
        sigma: kernel width (> 0), or ``None`` for the median neighbour distance.
        threshold: weights below it are dropped, in ``[0, 1)``.
        metric: ``"euclidean"``, ``"cosine"`` or ``"correlation"`` (see the module notes).
        chunk_size: rows of the distance matrix held at once; the result does not depend on it.
        gram: instead of ``activations``, a ``[neurons, neurons]`` Gram matrix.

    Returns:
        :class:`~torch_geometric.data.Data`; ``sigma`` holds the kernel width used.

    Example::

        >>> acts = torch.tensor([[0., 0.5, 3.], [0., 0., 0.]])
        >>> gaussian_graph(acts, sigma=1.0).edge_index           # only 0-1 is close enough
        tensor([[0, 1],
                [1, 0]])
        >>> g = gaussian_graph(acts * 40)           # sigma: the median 2-NN distance
        >>> g.sigma, g.edge_index.size(1)
        (100.0, 6)
    """
    provider, x = _distances(activations, gram, metric)
    n = provider.num_nodes
    if sigma is not None:
        sigma = check_positive(sigma, "sigma")
    threshold = _threshold_arg(threshold)
    chunk_size = _chunk_arg(chunk_size)
    if sigma is None:
        if n < 2:
            raise ValueError("gaussian_graph(sigma=None) takes sigma from the distances "
                             f"between neurons, which needs at least 2 neurons, got {n}; "
                             "pass sigma")
        sigma = float(_median_distance(_knn_directed(provider, min(_SIGMA_NEIGHBOURS, n - 1),
                                                     chunk_size)[2]))
    # max(): a median distance of 0 (duplicate neurons) joins exactly the duplicates
    sigma2 = max(sigma * sigma, torch.finfo(provider.dtype).tiny)
    # w >= t  <=>  d2 <= -sigma^2 log t; a little slack here, the exact test on w below
    cutoff = None if threshold == 0 else -sigma2 * math.log(threshold) * (1 + _CUTOFF_SLACK)
    row, col, d2 = _upper_pairs(provider, chunk_size, cutoff)
    weight = torch.exp(-(d2 / sigma2))
    keep = (weight >= threshold) & (weight > 0)
    data = _to_data(row[keep], col[keep], weight[keep], n, x)
    data.sigma = sigma
    if n >= 2 and data.edge_index.size(1) == 0:
        nearest = float(_kth_squared_distance(provider, 1, chunk_size).min().sqrt())
        needed = nearest / math.sqrt(-math.log(threshold)) if threshold > 0 else math.inf
        _warn_if_edgeless(data, f"no pair has weight exp(-d^2/sigma^2) >= threshold="
                                f"{threshold:g} at sigma={sigma:g} (the closest pair is "
                                f"{nearest:.3g} apart and needs sigma >= {needed:.3g}); use "
                                "sigma=None (the median distance to the 5 nearest neighbours),"
                                " a sigma near the distances between neurons, or a lower "
                                "threshold")
    return data


@torch.no_grad()
def adaptive_graph(
    activations: Tensor | None = None,
    k: int = 2,
    threshold: float = 0.0,
    metric: str = "euclidean",
    chunk_size: int | None = None,
    *,
    gram: Tensor | None = None,
) -> Data:
    r"""The adaptive-bandwidth Gaussian graph.

    :math:`\sigma_i` is the distance from neuron :math:`i` to its ``k``-th nearest neighbour
    (itself excluded; reference :math:`k = 2`), :math:`K_{ij} = \exp(-d_{ij}^2/\sigma_i^2)` and
    :math:`W = (K + K^\top)/2`; pairs with :math:`W_{ij} <` ``threshold`` (default 0: none but
    exact zeros) are dropped. A neuron with :math:`\sigma_i = 0` (``k`` duplicates) gives
    weight 1 to its duplicates and 0 to everything else in its own kernel. Dense for small
    thresholds: meant for layers of up to a few thousand neurons.

    Args:
        activations: ``[samples, neurons]``; each column is a neuron.
        k: which neighbour sets the bandwidth, ``1 <= k <= neurons - 1``.
        threshold: weights below it are dropped, in ``[0, 1)``.
        metric: ``"euclidean"``, ``"cosine"`` or ``"correlation"``.
        chunk_size: rows of the distance matrix held at once; the result does not depend on it.
        gram: instead of ``activations``, a ``[neurons, neurons]`` Gram matrix.

    Returns:
        :class:`~torch_geometric.data.Data`; ``sigma`` holds the ``[neurons]`` bandwidths.

    Example::

        >>> acts = torch.randn(32, 10)
        >>> g = adaptive_graph(acts)
        >>> g.edge_index.shape[1] == 10 * 9                     # every pair, both directions
        True
    """
    provider, x = _distances(activations, gram, metric)
    n = provider.num_nodes
    k = _k_arg(k, n)
    threshold = _threshold_arg(threshold)
    chunk_size = _chunk_arg(chunk_size)
    sigma2 = _kth_squared_distance(provider, k, chunk_size)
    sigma2 = sigma2.clamp(min=torch.finfo(sigma2.dtype).tiny)
    scale = -math.log(threshold) * (1 + _CUTOFF_SLACK) if threshold > 0 else math.inf

    def bound(start: int, stop: int) -> Tensor:
        # W >= t needs max(K_ij, K_ji) >= t, i.e. d2 <= -log(t) * max(sigma_i^2, sigma_j^2)
        return torch.maximum(sigma2[start:stop, None], sigma2[None, :]) * scale

    row, col, d2 = _upper_pairs(provider, chunk_size, bound if threshold > 0 else None)
    weight = (torch.exp(-(d2 / sigma2[row])) + torch.exp(-(d2 / sigma2[col]))) / 2
    keep = (weight >= threshold) & (weight > 0)
    data = _to_data(row[keep], col[keep], weight[keep], n, x)
    data.sigma = sigma2.sqrt()
    _warn_if_edgeless(data, f"no pair has weight >= threshold={threshold:g}; lower the "
                            "threshold")
    return data


# --------------------------------------------------------------------------------------------
# accumulated co-activation statistics
# --------------------------------------------------------------------------------------------

class CoactivationStats:
    r"""Running mean and covariance of a layer's activations over many batches.

    Stored as ``count`` (:math:`n`), ``mean`` (:math:`\mu`, ``[N]``) and ``m2``
    (:math:`M_2 = \sum_b (a_b - \mu)(a_b - \mu)^\top`, ``[N, N]``). A batch is merged with
    Chan et al.'s parallel update

    .. math::
        n' = n + B,\quad \delta = \bar a - \mu,\quad \mu' = \mu + \delta B / n',\quad
        M_2' = M_2 + M_{2,\text{batch}} + \delta\delta^\top\, n B / n',

    which stays accurate when the mean is large against the spread (the naive
    :math:`\sum a a^\top - n\mu\mu^\top` does not).

    ``mode="exact"``: every sample weighs 1; the statistics equal those of the concatenated
    batches. ``mode="ema"``: before each update the stored statistics are decayed by
    ``momentum`` (:math:`n \leftarrow \text{momentum}\cdot n`, :math:`M_2 \leftarrow
    \text{momentum}\cdot M_2`, :math:`\mu` kept), so a sample seen :math:`t` updates ago
    weighs :math:`\text{momentum}^t`; the statistics are those of that weighted sample set,
    ``count`` is its total weight (it tends to :math:`B / (1 - \text{momentum})`), and after a
    single batch both modes agree.

    The graph builders see the statistics as neuron features spanning every sample seen:
    :meth:`to_data` gives the Gram matrix for which the builders return exactly the graph
    they would build from the concatenated batches (in ``ema`` mode: the weighted samples).
    For ``"cosine"``/``"correlation"`` (and for ``standardize=True``) the result does not
    depend on how many samples were seen; for plain ``"euclidean"`` distances grow like
    :math:`\sqrt{n}`, which matters to a fixed Gaussian ``sigma`` but not to kNN.

    Several processes: :meth:`all_reduce` combines the statistics of every process of a
    ``torch.distributed`` group (three sum-reductions, exact), :meth:`merge` combines two
    objects.

    Memory is :math:`N^2` (``N = 8,192`` in float64 is 512 MB).

    Args:
        num_neurons: layer width ``N``.
        mode: ``"exact"`` or ``"ema"``.
        momentum: decay per update in ``ema`` mode, in ``(0, 1)``.
        device: where the statistics live (default: the device of the first update).
        dtype: accumulation dtype (float64 recommended).

    Example::

        >>> stats = CoactivationStats(64)
        >>> for _ in range(10):
        ...     stats.update(torch.randn(32, 64))
        >>> stats.count, stats.covariance.shape
        (320.0, torch.Size([64, 64]))
    """

    def __init__(self, num_neurons: int, mode: str = "exact", momentum: float = 0.99,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float64) -> None:
        self.num_neurons = check_int(num_neurons, "num_neurons", minimum=1)
        self.mode = _choice_arg(mode, "mode", STATS_MODES)
        momentum = check_positive(momentum, "momentum")
        if not momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.momentum = momentum
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {describe(dtype)}")
        self.dtype = dtype
        self._device_given = device is not None
        self._allocate(torch.device(device) if device is not None else torch.device("cpu"))

    def _allocate(self, device: torch.device) -> None:
        n = self.num_neurons
        self._count = torch.zeros((), dtype=self.dtype, device=device)
        self._mean = torch.zeros(n, dtype=self.dtype, device=device)
        self._m2 = torch.zeros(n, n, dtype=self.dtype, device=device)
        self._updates = 0

    @property
    def device(self) -> torch.device:
        return self._mean.device

    def to(self, device: torch.device | str) -> CoactivationStats:
        """Move the statistics to ``device`` (in place); returns ``self``."""
        device = torch.device(device)
        self._count = self._count.to(device)
        self._mean = self._mean.to(device)
        self._m2 = self._m2.to(device)
        self._device_given = True
        return self

    def reset(self) -> None:
        """Forget every sample (the device is kept)."""
        self._allocate(self.device)

    @torch.no_grad()
    def update(self, activations: Tensor) -> None:
        """Add a batch ``[B, N]`` of activations (``B >= 1``); no host synchronisation.

        Non-finite activations are not checked here (that would synchronise every step);
        they make the statistics non-finite, which :meth:`to_data` reports.
        """
        check_tensor(activations, "activations", ndim=2, floating=True)
        if activations.shape[1] != self.num_neurons or activations.shape[0] < 1:
            raise ValueError(f"activations must be [batch >= 1, {self.num_neurons}] for these "
                             f"statistics, got {describe(activations)}")
        if activations.device != self.device:
            if self._updates == 0 and not self._device_given:
                self._allocate(activations.device)
            else:
                raise ValueError(
                    f"activations are on {activations.device} but the statistics live on "
                    f"{self.device}; create CoactivationStats(..., device=...) or call .to()"
                )
        a = activations.detach().to(self.dtype)
        batch = a.shape[0]
        batch_mean = a.mean(dim=0)
        centred = a - batch_mean
        batch_m2 = centred.t() @ centred
        if self.mode == "ema" and self._updates > 0:
            self._count.mul_(self.momentum)
            self._m2.mul_(self.momentum)
        self._merge(batch, batch_mean, batch_m2)
        self._updates += 1

    def _merge(self, count, mean: Tensor, m2: Tensor) -> None:
        """Chan's pairwise merge of (count, mean, m2) into the stored statistics."""
        old = self._count.clone()
        total = old + count
        delta = mean - self._mean
        self._mean.add_(delta * (count / total))
        self._m2.add_(m2).add_(torch.outer(delta, delta) * (old * count / total))
        self._count = total

    def merge(self, other: CoactivationStats) -> CoactivationStats:
        """Add the samples of ``other`` (same width, same device) to ``self``; returns ``self``."""
        if not isinstance(other, CoactivationStats):
            raise TypeError(f"other must be a CoactivationStats, got {describe(other)}")
        if other.num_neurons != self.num_neurons:
            raise ValueError(f"other has {other.num_neurons} neurons, expected "
                             f"{self.num_neurons}")
        if float(other._count) == 0:
            return self
        self._merge(other._count.to(self.device, self.dtype),
                    other._mean.to(self.device, self.dtype),
                    other._m2.to(self.device, self.dtype))
        self._updates += max(1, other._updates)
        return self

    @torch.no_grad()
    def all_reduce(self, group=None) -> CoactivationStats:
        r"""Combine the statistics of every process in ``group`` (each ends with the total).

        With :math:`n = \sum_p n_p` and :math:`\mu = \sum_p n_p \mu_p / n`:
        :math:`M_2 = \sum_p M_{2,p} + n_p (\mu_p - \mu)(\mu_p - \mu)^\top`; three
        sum-reductions, no gathering of raw activations.
        """
        import torch.distributed as dist

        count = self._count.clone()
        dist.all_reduce(count, group=group)
        weighted = self._mean * self._count
        dist.all_reduce(weighted, group=group)
        mean = weighted / count.clamp(min=torch.finfo(self.dtype).tiny)
        delta = self._mean - mean
        m2 = self._m2 + torch.outer(delta, delta) * self._count
        dist.all_reduce(m2, group=group)
        self._count, self._mean, self._m2 = count, mean, m2
        self._updates = max(self._updates, 1)
        return self

    # ---- read-outs -----------------------------------------------------------------------

    @property
    def count(self) -> float:
        """Number of samples seen (``ema``: their total weight)."""
        return float(self._count)

    def _require(self, more_than: float = 0.0) -> None:
        count = float(self._count)
        if self._updates == 0 or not count > more_than:
            raise ValueError(f"CoactivationStats needs a count above {more_than:g} here, "
                             f"got count={count:g} (call update() with activations first)")

    @property
    def mean(self) -> Tensor:
        """``[N]`` mean activation of every neuron."""
        self._require()
        return self._mean.clone()

    @property
    def covariance(self) -> Tensor:
        r"""``[N, N]`` sample covariance :math:`M_2 / (n - 1)` (as ``numpy.cov``; in ``ema``
        mode the samples count with their weights, as frequency weights)."""
        self._require(1.0)
        return self._m2 / (self._count - 1)

    def constant_neurons(self) -> Tensor:
        """``[N]`` bool mask of neurons whose variance is zero up to rounding."""
        variance = self._m2.diagonal() / self._count.clamp(min=torch.finfo(self.dtype).tiny)
        scale = _CONSTANT_EPS * torch.finfo(self.dtype).eps * self._mean.abs()
        return variance <= scale * scale

    @property
    def correlation(self) -> Tensor:
        """``[N, N]`` Pearson correlation; a constant neuron has correlation 0 with the others
        and 1 with itself."""
        self._require()
        constant = self.constant_neurons()
        std = self._m2.diagonal().clamp(min=torch.finfo(self.dtype).tiny).sqrt()
        inv = torch.where(constant, torch.zeros_like(std), 1 / std)
        corr = (self._m2 * inv[:, None]) * inv[None, :]
        corr.clamp_(-1.0, 1.0)
        corr.diagonal().fill_(1.0)
        return corr

    @torch.no_grad()
    def to_data(self, metric: str = "correlation", standardize: bool = False) -> Data:
        r"""What the graph builders need: ``Data(num_nodes=N, gram=G, ...)``.

        ``G`` is the Gram matrix of the neuron features "all samples seen":

        * ``"correlation"`` (any ``standardize``): :math:`M_2` (centred features);
        * ``"euclidean"``/``"cosine"`` with ``standardize=True``: :math:`n R` (the Gram matrix
          of features z-scored with the population standard deviation);
        * otherwise: :math:`M_2 + n\mu\mu^\top` (the raw features).

        So ``knn_graph(gram=G, metric=...)`` equals ``knn_graph(concatenated batches, ...)``
        (after z-scoring each neuron when ``standardize``), up to rounding. ``gram_metric``,
        ``gram_standardized`` and ``count`` record how it was made.
        """
        _metric_arg(metric)
        if not isinstance(standardize, bool):
            raise TypeError(f"standardize must be a bool, got {describe(standardize)}")
        self._require()
        check_finite(self._m2, "the accumulated statistics (non-finite activations?)")
        if metric == "correlation" or standardize:
            why = "metric='correlation'" if metric == "correlation" else "standardize=True"
            _raise_constant(self.constant_neurons(), why)
        if metric == "correlation":
            gram = self._m2.clone()
        elif standardize:
            gram = self.correlation * self._count
        else:
            gram = self._m2 + torch.outer(self._mean, self._mean) * self._count
        return Data(num_nodes=self.num_neurons, gram=gram, gram_metric=metric,
                    gram_standardized=standardize, count=self.count)

    # ---- persistence ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (``torch.load(..., weights_only=True)`` reads them)."""
        return {
            "count": self._count.clone(),
            "mean": self._mean.clone(),
            "m2": self._m2.clone(),
            "updates": torch.tensor(self._updates, dtype=torch.int64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict from state_dict(), got {describe(state)}")
        missing = [key for key in ("count", "mean", "m2") if key not in state]
        if missing:
            raise ValueError(f"state is missing {missing}; expected a CoactivationStats "
                             f"state_dict, got keys {sorted(state)}")
        n = self.num_neurons
        shapes = {"count": (), "mean": (n,), "m2": (n, n)}
        for key, shape in shapes.items():
            value = check_tensor(state[key], f"state[{key!r}]")
            if tuple(value.shape) != shape:
                raise ValueError(f"state[{key!r}] must have shape {shape} for {n} neurons, "
                                 f"got {describe(value)}")
        device = self.device
        self._count = state["count"].to(device, self.dtype).clone()
        self._mean = state["mean"].to(device, self.dtype).clone()
        self._m2 = state["m2"].to(device, self.dtype).clone()
        updates = state.get("updates")
        self._updates = int(updates) if updates is not None else int(float(self._count) > 0)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.num_neurons}, mode={self.mode!r}, "
                f"count={self.count:g})")


# --------------------------------------------------------------------------------------------
# the transform
# --------------------------------------------------------------------------------------------

_DEFAULT_K = {"knn": 5, "adaptive": 2}
_DEFAULT_THRESHOLD = {"gaussian": 0.1, "adaptive": 0.0}


class CoactivationGraph(BaseTransform):
    r"""Learns a neuron graph from co-activations (a PyG transform).

    ``forward(data)`` reads either ``data.x`` (``[neurons, features]``: one row per neuron,
    e.g. the transposed batch of activations) or ``data.gram`` (from
    :meth:`CoactivationStats.to_data`) and sets ``edge_index``/``edge_weight`` with
    :func:`knn_graph`, :func:`gaussian_graph` or :func:`adaptive_graph`. ``data.gram`` and its
    bookkeeping attributes are dropped from the result (an ``N x N`` matrix is not part of a
    graph).

    The defaults are the reference: kNN, ``k=5``, euclidean, connectivity weights, mean
    symmetrisation, the current batch as features. :meth:`recommended` is the preset this
    library suggests otherwise. The one default that is not the reference is the width of
    ``method="gaussian"``: taken from the data (see :func:`gaussian_graph`), as the
    reference's :math:`\sigma = 1` leaves ordinary activations without edges; pass
    ``sigma=1.0`` for the reference.

    Args:
        method: ``"knn"``, ``"gaussian"`` or ``"adaptive"``.
        k: neighbours (``knn``, default 5) or bandwidth neighbour (``adaptive``, default 2).
        metric: ``"euclidean"``, ``"cosine"`` or ``"correlation"``.
        weights, symmetrize: for ``knn`` (see :func:`knn_graph`).
        sigma: kernel width (default from the data: ``gaussian``, the median distance to the
            5 nearest neighbours; ``knn`` with gaussian weights, the median kNN distance;
            reference ``gaussian``: 1).
        threshold: weight cut-off (``gaussian``: default 0.1; ``adaptive``: default 0).
        features: what a training loop should feed: ``"batch"`` (the activations of the
            current batch, the reference) or ``"stats"`` (a :class:`CoactivationStats`
            accumulated since the last refresh). Read by the trainer, not by ``forward``.
        stats_mode, stats_momentum: how that :class:`CoactivationStats` accumulates.
        standardize: z-score every neuron over the samples (population standard deviation)
            before measuring distances (euclidean on z-scores ranks like correlation).
        chunk_size: see :func:`knn_graph`.

    Example::

        >>> transform = CoactivationGraph()                     # the reference
        >>> g = transform.from_activations(torch.randn(32, 64))
        >>> g.num_nodes
        64
    """

    def __init__(
        self,
        method: str = "knn",
        k: int | None = None,
        metric: str = "euclidean",
        weights: str = "connectivity",
        symmetrize: str = "mean",
        sigma: float | None = None,
        threshold: float | None = None,
        features: str = "batch",
        standardize: bool = False,
        chunk_size: int | None = None,
        stats_mode: str = "exact",
        stats_momentum: float = 0.99,
    ) -> None:
        self.method = _choice_arg(method, "method", METHODS)
        if k is None:
            k = _DEFAULT_K.get(method)
        elif method == "gaussian":
            raise ValueError("k is not used by method='gaussian' (every pair within the "
                             f"threshold is kept), got k={k!r}")
        else:
            check_int(k, "k", minimum=1)
        self.k = k
        self.metric = _metric_arg(metric)
        self.weights = _choice_arg(weights, "weights", WEIGHTS)
        self.symmetrize = _choice_arg(symmetrize, "symmetrize", SYMMETRIZE)
        if sigma is not None:  # None: the builder takes it from the data
            sigma = check_positive(sigma, "sigma")
            if method == "adaptive" or (method == "knn" and weights != "gaussian"):
                raise ValueError(f"sigma is not used by method={method!r} with "
                                 f"weights={weights!r}, got sigma={sigma!r}")
        self.sigma = sigma
        if threshold is None:
            threshold = _DEFAULT_THRESHOLD.get(method)
        else:
            threshold = _threshold_arg(threshold)
            if method == "knn":
                raise ValueError(f"threshold is not used by method='knn', got {threshold!r}")
        self.threshold = threshold
        self.features = _choice_arg(features, "features", FEATURES)
        if not isinstance(standardize, bool):
            raise TypeError(f"standardize must be a bool, got {describe(standardize)}")
        self.standardize = standardize
        self.chunk_size = _chunk_arg(chunk_size)
        self.stats_mode = _choice_arg(stats_mode, "stats_mode", STATS_MODES)
        self.stats_momentum = check_positive(stats_momentum, "stats_momentum")
        if not self.stats_momentum < 1:
            raise ValueError(f"stats_momentum must be in (0, 1), got {self.stats_momentum}")

    @classmethod
    def reference(cls) -> CoactivationGraph:
        """The original method: kNN (k=5) over the current batch, euclidean, connectivity
        weights, ``(A + A^T)/2``."""
        return cls()

    @classmethod
    def recommended(cls, **overrides) -> CoactivationGraph:
        """This library's preset: kNN (k=5, mean symmetrisation) on the correlation of
        statistics accumulated since the last refresh (exact mode).

        Why: 32 samples give a noisy graph that changes from batch to batch; a few thousand
        samples give a stable one. Correlation ignores each neuron's offset and scale, which
        the penalty itself changes during training, so neurons are joined by how they
        co-vary, not by how large they are. ``k`` stays at the reference's 5, so the graph is
        as sparse as the original and the "stop when disconnected" rule keeps its meaning.
        Keyword arguments override any field. Constant (dead) neurons raise with correlation.
        """
        params = dict(method="knn", k=5, metric="correlation", weights="connectivity",
                      symmetrize="mean", features="stats", stats_mode="exact")
        params.update(overrides)
        return cls(**params)

    # ---- building -----------------------------------------------------------------------

    def _build(self, activations: Tensor | None, gram: Tensor | None) -> Data:
        chunk = self.chunk_size
        if self.method == "knn":
            return knn_graph(activations, k=self.k, metric=self.metric, weights=self.weights,
                             symmetrize=self.symmetrize, sigma=self.sigma, chunk_size=chunk,
                             gram=gram)
        if self.method == "gaussian":
            return gaussian_graph(activations, sigma=self.sigma, threshold=self.threshold,
                                  metric=self.metric, chunk_size=chunk, gram=gram)
        return adaptive_graph(activations, k=self.k, threshold=self.threshold,
                              metric=self.metric, chunk_size=chunk, gram=gram)

    def forward(self, data: Data) -> Data:
        gram = getattr(data, "gram", None)
        if gram is not None:
            made_for = getattr(data, "gram_metric", None)
            made_std = getattr(data, "gram_standardized", None)
            if made_for is not None and (
                (made_for == "correlation") != (self.metric == "correlation")
                or (self.metric != "correlation" and bool(made_std) != self.standardize)
            ):
                raise ValueError(
                    f"data.gram was made for metric={made_for!r}, standardize={made_std!r} "
                    f"but this transform uses metric={self.metric!r}, "
                    f"standardize={self.standardize!r}; use "
                    f"stats.to_data(metric={self.metric!r}, standardize={self.standardize!r}) "
                    f"or CoactivationGraph.from_stats(stats)"
                )
            graph = self._build(None, gram)
            for key in ("gram", "gram_metric", "gram_standardized"):
                if key in data:
                    del data[key]
        else:
            x = getattr(data, "x", None)
            if x is None:
                raise ValueError("data must carry x ([neurons, features]) or gram "
                                 "([neurons, neurons]), got neither")
            check_tensor(x, "data.x", ndim=2, floating=True)
            graph = self._build(self._prepare(x).t(), None)
        data.edge_index = graph.edge_index
        data.edge_weight = graph.edge_weight
        data.num_nodes = graph.num_nodes
        if "sigma" in graph:
            data.sigma = graph.sigma
        return data

    def _prepare(self, x: Tensor) -> Tensor:
        """Neuron features [neurons, samples], z-scored per neuron when ``standardize``."""
        if not self.standardize:
            return x
        check_finite(x, "data.x")
        x = x.detach().to(_work_dtype(x.dtype))
        _raise_constant(_constant_features(x), "standardize=True")
        centred = x - x.mean(dim=1, keepdim=True)
        return centred / centred.pow(2).mean(dim=1, keepdim=True).sqrt()

    def from_activations(self, activations: Tensor) -> Data:
        """Graph from a batch ``[samples, neurons]``; ``x`` holds ``activations.T``."""
        check_tensor(activations, "activations", ndim=2, floating=True)
        data = Data(x=activations.detach().t(), num_nodes=activations.shape[1])
        return self.forward(data)  # a Data of its own: no defensive copy needed

    def from_stats(self, stats: CoactivationStats) -> Data:
        """Graph from accumulated statistics (the samples since they were last reset)."""
        if not isinstance(stats, CoactivationStats):
            raise TypeError(f"stats must be a CoactivationStats, got {describe(stats)}")
        return self.forward(stats.to_data(metric=self.metric, standardize=self.standardize))

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}"]
        if self.k is not None:
            parts.append(f"k={self.k}")
        parts.append(f"metric={self.metric!r}")
        if self.method == "knn":
            parts += [f"weights={self.weights!r}", f"symmetrize={self.symmetrize!r}"]
        if self.sigma is not None:
            parts.append(f"sigma={self.sigma:g}")
        if self.threshold is not None:
            parts.append(f"threshold={self.threshold:g}")
        parts.append(f"features={self.features!r}")
        if self.features == "stats":
            parts.append(f"stats_mode={self.stats_mode!r}")
        if self.standardize:
            parts.append("standardize=True")
        return f"{self.__class__.__name__}({', '.join(parts)})"


# --------------------------------------------------------------------------------------------
# graphs from positions
# --------------------------------------------------------------------------------------------

POSITION_METHODS = ("knn", "radius", "gaussian")
_DEFAULT_POSITION_K = 8


def _positions_arg(pos) -> Tensor:
    """Validate ``[N, D]`` coordinates; return them centred, in a precise dtype, ``D >= 2``."""
    check_tensor(pos, "pos", ndim=2)
    if pos.dtype == torch.bool or pos.is_complex():
        raise ValueError(f"pos must hold real coordinates, got {describe(pos)}")
    if pos.shape[0] < 1 or pos.shape[1] < 1:
        raise ValueError(f"pos must be [num_points, dims] with at least 1 point and 1 "
                         f"dimension, got {describe(pos)}")
    check_finite(pos, "pos")
    # float64: positions sit far from the origin (d^2 = |x|^2 + |y|^2 - 2 x.y cancels badly);
    # centring removes the offset. MPS has no float64.
    dtype = torch.float32 if pos.device.type == "mps" else torch.float64
    points = pos.detach().to(dtype)
    points = points - points.mean(dim=0, keepdim=True)
    if points.shape[1] == 1:
        # the builders read each point as a column of >= 2 samples; a zero column keeps d
        points = torch.cat([points, torch.zeros_like(points)], dim=1)
    return points


def _unused(method: str, **given) -> None:
    for name, value in given.items():
        if value is not None:
            raise ValueError(f"{name} is not used by method={method!r}, got {name}={value!r}")


def _radius_graph(points: Tensor, radius: float, sigma: float | None,
                  chunk_size: int | None) -> Data:
    """Pairs with d <= radius; weight 1, or exp(-d^2/sigma^2) with ``sigma``."""
    n = points.shape[0]
    row, col, d2 = _upper_pairs(_FeatureDistances(points, "euclidean"), chunk_size,
                                radius * radius)
    if sigma is None:
        weight = torch.ones_like(d2)
    else:
        weight = torch.exp(-(d2 / max(sigma * sigma, torch.finfo(d2.dtype).tiny)))
    data = _to_data(row, col, weight, n, None)
    if sigma is not None:
        data.sigma = sigma
    if n >= 2 and data.edge_index.size(1) == 0:
        warnings.warn(f"no two of the {n} points are within radius={radius:g} (or every "
                      "weight underflowed to 0): the graph has no edges", UserWarning,
                      stacklevel=3)
    return data


@torch.no_grad()
def from_positions(
    pos: Tensor,
    method: str = "knn",
    *,
    k: int | None = None,
    radius: float | None = None,
    sigma: float | None = None,
    threshold: float | None = None,
    symmetrize: str = "mean",
    chunk_size: int | None = None,
) -> Data:
    r"""A graph over points in space: a "cortical sheet" of any shape in one call.

    Node :math:`i` sits at ``pos[i]`` (:math:`D` coordinates) and
    :math:`d_{ij} = \lVert p_i - p_j \rVert` (euclidean). Three rules make the edges:

    * ``"knn"``: every point keeps its ``k`` nearest points (default 8; ties at the ``k``-th
      distance go to the lower index), weight 1, or :math:`\exp(-d_{ij}^2/\sigma^2)` when
      ``sigma`` is given; then symmetrised exactly as :func:`knn_graph` (``"mean"``:
      :math:`(A + A^\top)/2`, ``"max"``, ``"mutual"``), which this calls;
    * ``"radius"``: every pair with :math:`d_{ij} \le` ``radius``, weight 1, or
      :math:`\exp(-d_{ij}^2/\sigma^2)` when ``sigma`` is given (networkx's
      ``random_geometric_graph`` on the same points, with weights);
    * ``"gaussian"``: :math:`w_{ij} = \exp(-d_{ij}^2/\sigma^2)` for every pair with
      :math:`w_{ij} \ge` ``threshold`` (default 0.1), i.e. :math:`d_{ij} \le
      \sigma\sqrt{-\ln t}`; ``sigma=None`` takes the median distance to the 5 nearest
      points (see :func:`gaussian_graph`, which this calls).

    A weight that underflows to 0 is no edge. Arguments that the method does not use
    (``k`` outside ``"knn"``, ``radius`` outside ``"radius"``, ``threshold`` outside
    ``"gaussian"``) are refused rather than ignored; ``symmetrize`` is read by ``"knn"``
    only. Distances are computed in float64 on centred coordinates, so coordinates far from
    the origin rank as exactly as near ones.

    The result follows the package's data model (:func:`gsr_pyg.graphs.check_graph`) and
    keeps the coordinates: ``pos`` holds them for :math:`D = 2` (the plotting layout), and
    ``(x, 0)`` for :math:`D = 1`; for :math:`D \ne 2` ``coords`` holds the ``[N, D]`` input
    (the data model's ``pos`` is a 2-D layout). Everything stays on the device of ``pos``.

    Args:
        pos: ``[N, D]`` real coordinates, finite.
        method: ``"knn"``, ``"radius"`` or ``"gaussian"``.
        k: neighbours per point for ``"knn"``, ``1 <= k <= N - 1`` (default 8).
        radius: the reach of ``"radius"`` (> 0; required there).
        sigma: kernel width (> 0): Gaussian weights for ``"knn"``/``"radius"`` (default:
            weight 1), the width for ``"gaussian"`` (default: from the data).
        threshold: smallest weight kept by ``"gaussian"``, in ``[0, 1)`` (default 0.1).
        symmetrize: ``"mean"``, ``"max"`` or ``"mutual"`` for ``"knn"``.
        chunk_size: rows of the distance matrix held at once; the result does not depend on
            it.

    Example::

        >>> xy = torch.tensor([[0., 0.], [1., 0.], [0., 1.], [5., 5.]])
        >>> from_positions(xy, "radius", radius=1.0).edge_index
        tensor([[0, 0, 1, 2],
                [1, 2, 0, 0]])
        >>> g = from_positions(torch.rand(100, 3), k=4)          # a 3-D "sheet"
        >>> g.num_nodes, g.coords.shape, "pos" in g
        (100, torch.Size([100, 3]), False)
    """
    method = _choice_arg(method, "method", POSITION_METHODS)
    points = _positions_arg(pos)
    n = points.shape[0]
    if sigma is not None:
        sigma = check_positive(sigma, "sigma")
    chunk_size = _chunk_arg(chunk_size)
    if method == "knn":
        _unused(method, radius=radius, threshold=threshold)
        k = _DEFAULT_POSITION_K if k is None else k
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"k must be an int, got {describe(k)}")
        if not 1 <= k <= n - 1:
            raise ValueError(f"k must be between 1 and num_points - 1 = {n - 1} (a point is "
                             f"not its own neighbour), got k={k} for {n} points")
        data = knn_graph(points.t(), k=k, weights="connectivity" if sigma is None else
                         "gaussian", symmetrize=symmetrize, sigma=sigma, chunk_size=chunk_size)
    elif method == "radius":
        _unused(method, k=k, threshold=threshold)
        if radius is None:
            raise ValueError("method='radius' needs radius (> 0), got radius=None")
        data = _radius_graph(points, check_positive(radius, "radius"), sigma, chunk_size)
    else:
        _unused(method, k=k, radius=radius)
        threshold = 0.1 if threshold is None else threshold
        if sigma is None and n < 2:
            raise ValueError(f"method='gaussian' with sigma=None takes sigma from the distances "
                             f"between points, which needs at least 2 points, got {n}; pass "
                             "sigma")
        data = gaussian_graph(points.t(), sigma=sigma, threshold=threshold,
                              chunk_size=chunk_size)
    return _keep_positions(data, pos)


def _keep_positions(data: Data, pos: Tensor) -> Data:
    if "x" in data:
        del data["x"]  # the builders' neuron features: here, the centred coordinates
    coords = pos.detach() if pos.is_floating_point() else pos.detach().to(torch.float32)
    if coords.shape[1] == 2:
        data.pos = coords
    else:
        data.coords = coords
        if coords.shape[1] == 1:
            data.pos = torch.cat([coords, torch.zeros_like(coords)], dim=1)
    return data
